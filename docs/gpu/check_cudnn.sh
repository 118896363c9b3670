#!/usr/bin/env bash
# The cuDNN convolutions (`--features cudnn`) checked on a GPU, in two steps:
#
#   docs/gpu/check_cudnn.sh build   # on the build machine (Rust, no GPU needed): builds the
#                                   # tests/cudnn.rs test binary and copies it, stripped of
#                                   # debug info, to target/gpu-check/cudnn-test
#   docs/gpu/check_cudnn.sh         # on the GPU machine (no Rust needed), from the repository
#                                   # root with target/gpu-check carried there: finds libcudnn.so.9
#                                   # and the CUDA libraries, then runs the tests and prints
#                                   # each comparison's relative error
#
# The build step needs the CUDA wheels and stub libraries: it sources ../shared/cuda/setup.sh
# (or $CUDA_SETUP) and writes the libcudnn stub with docs/gpu/make-cudnn-stub.sh. The run step
# needs libcudnn.so.9 on the GPU machine (a PyTorch cu13 install has it, from the
# nvidia-cudnn-cu13 wheel, under site-packages/nvidia/cudnn/lib) and must not see the stubs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=target/gpu-check/cudnn-test

if [ "${1:-}" = build ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  # setup.sh takes its venv as $1: name it, or a sourced script would see "build" there.
  # shellcheck disable=SC1090
  . "${CUDA_SETUP:-../shared/cuda/setup.sh}" "$CARGO_TARGET_DIR/cuda-venv"
  docs/gpu/make-cudnn-stub.sh "$CU/lib/stubs" >/dev/null
  exe=$(nice -n 19 cargo test -p unet-model --features cudnn --test cudnn --no-run \
          --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cudnn" and m.get("executable"):
        print(m["executable"])' | tail -1)
  [ -n "$exe" ] || { echo "build failed: run cargo test -p unet-model --features cudnn --test cudnn --no-run" >&2; exit 1; }
  mkdir -p target/gpu-check
  cp "$exe" "$BIN"
  strip --strip-debug "$BIN"
  ls -l "$BIN"
  echo "stub run (must skip):"
  LD_LIBRARY_PATH=$CUDA_RUN_LD_LIBRARY_PATH "$BIN" --test-threads=1 --nocapture 2>&1 | grep -E 'skipped|test result' | sort | uniq -c
  exit 0
fi

[ -x "$BIN" ] || { echo "$BIN missing: run 'docs/gpu/check_cudnn.sh build' on the build machine and carry target/gpu-check" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || echo "nvidia-smi failed"

# The directories of the real CUDA libraries the binary links (never the stubs).
want='libcudnn.so.9 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13'
dirs=$(python3 - "$want" <<'PY' 2>/dev/null || true
import os, site, sys
want = set(sys.argv[1].split())
roots = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
roots += ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib", "/opt"]
found = {}
for root in roots:
    for d, _, files in os.walk(root):
        if "stubs" in d.split(os.sep):
            continue
        for f in want.intersection(files):
            found.setdefault(f, d)
print(":".join(dict.fromkeys(found.values())))
PY
)
export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if ldd "$BIN" | grep 'not found'; then
  echo "missing libraries above: install them (e.g. pip install nvidia-cudnn-cu13) or add their directory to LD_LIBRARY_PATH" >&2
  exit 1
fi
ldd "$BIN" | grep -E 'cudnn|cublas|cuda\.so|nvrtc|curand|cudart'
"$BIN" --test-threads=1 --nocapture
