#!/usr/bin/env bash
# Make a GPU-less machine able to LINK unet-rs's `cudnn` feature: candle links cudarc with
# `dynamic-linking`, and cudarc's `cudnn` feature then links `-lcudnn`, so a test or binary built
# with `--features cudnn` needs a libcudnn.so at link time and libcudnn.so.9 at start-up.
#
# This writes a stand-in libcudnn.so.9 (soname libcudnn.so.9, the real library's) generated from
# the extern declarations in cudarc's own cuDNN bindings: every status-returning entry returns
# CUDNN_STATUS_NOT_INITIALIZED (1001), cudnnGetVersion returns 0 and cudnnGetErrorString a fixed
# message. A binary linked against it loads the real libcudnn.so.9 on a GPU machine (from the
# `nvidia-cudnn-cu13` wheel or a system install) and, on a machine with only the stubs, starts and
# falls back to unet's own convolutions when creating a cuDNN handle fails.
#
# usage: docs/gpu/make-cudnn-stub.sh OUTDIR
#   Source ../shared/cuda/setup.sh first and pass "$CU/lib/stubs": cudarc's build script already
#   searches $CUDA_ROOT/lib/stubs, so no link flags (which would rebuild everything) change.
set -euo pipefail
OUT=${1:?OUTDIR}; mkdir -p "$OUT"
CUDARC=$(cargo metadata --format-version 1 --all-features 2>/dev/null | python3 -c '
import json,sys,os
m=json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
python3 - "$CUDARC/src/cudnn/sys/mod.rs" > "$OUT/libcudnn.so.9.c" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
names = sorted(set(re.findall(r'^pub unsafe fn (\w+)\(', src, re.M)))
special = {
    # size_t results: 0 reads as "no usable cuDNN" rather than a made-up version.
    "cudnnGetVersion": 'unsigned long cudnnGetVersion(void){return 0;}',
    "cudnnGetMaxDeviceVersion": 'unsigned long cudnnGetMaxDeviceVersion(void){return 0;}',
    "cudnnGetCudartVersion": 'unsigned long cudnnGetCudartVersion(void){return 0;}',
    # A pointer result: a real string, so that a caller printing it does not crash.
    "cudnnGetErrorString": 'const char*cudnnGetErrorString(int s){(void)s;return "cuDNN is a stub library (no libcudnn on this machine)";}',
}
print('typedef int R;')
for n in names:
    print(special.get(n, f'R {n}(void){{return 1001;}}'))
PY
gcc -shared -fPIC -O1 -w -Wl,-soname,libcudnn.so.9 -o "$OUT/libcudnn.so.9" "$OUT/libcudnn.so.9.c"
rm -f "$OUT/libcudnn.so.9.c"
ln -sf libcudnn.so.9 "$OUT/libcudnn.so"
ls "$OUT"/libcudnn*
