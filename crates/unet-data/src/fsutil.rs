//! Writing files so that no run loses a user's data.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Write `bytes` to `path` atomically: into a temporary file beside it, flushed to disk, then
/// renamed over `path`, and the directory flushed so the rename survives a power cut. A crash or
/// Ctrl-C leaves either the old file or the new one, never half of one. Creates the parent
/// directory when missing.
pub fn write_atomically(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_all_atomically(&[(path.as_ref(), bytes)])
}

/// Write several files that belong together (a checkpoint's weights, optimizer state and
/// sidecar): every one goes to its temporary file and is flushed to disk before the first
/// rename, so a write that fails (a full disk, a file-size limit) replaces none of them; then
/// they are renamed in order, the last one last (the file that says the set is complete).
pub fn write_all_atomically(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut written: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let remove_written = |written: &[(PathBuf, &Path)]| {
        for (tmp, _) in written {
            let _ = fs::remove_file(tmp);
        }
    };
    for &(path, bytes) in files {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = fs::create_dir_all(parent) {
                remove_written(&written);
                return Err(Error::io(parent, e));
            }
        }
        let tmp = temp_path_for(path);
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            remove_written(&written);
            return Err(Error::io(path, e));
        }
        written.push((tmp, path));
    }
    for (i, (tmp, path)) in written.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, path) {
            remove_written(&written[i..]);
            return Err(Error::io(*path, e));
        }
    }
    for (_, path) in &written {
        sync_parent_dir(path);
    }
    Ok(())
}

/// Flushes the directory entry of `path` (the rename) to disk. Best effort: some file systems
/// and platforms cannot open or sync a directory, and the file itself is already durable.
pub(crate) fn sync_parent_dir(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Whether a process of this id runs (on Linux, by `/proc`; elsewhere every id counts as
/// running, so nothing a live writer may still own is ever taken over there).
pub fn process_is_running(pid: u32) -> bool {
    let proc_dir = Path::new("/proc");
    if !proc_dir.join("self").exists() {
        return true;
    }
    proc_dir.join(pid.to_string()).exists()
}

/// The process id in a temporary name of [`temp_path_for`]'s form for `path`, if `candidate` is
/// one: `.NAME.PID.tmp` beside it.
pub fn temp_path_pid(path: &Path, candidate: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let other = candidate.file_name()?.to_str()?;
    let pid = other
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_suffix(".tmp")?;
    pid.parse().ok()
}

/// The temporary name used while writing `path`: a hidden sibling with the process id.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("x.bin");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_set_whose_second_write_fails_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        write_all_atomically(&[(&a, b"a1"), (&b, b"b1")]).unwrap();
        // The second file's temporary cannot be created (a directory stands there), as when
        // the disk fills up while writing it.
        fs::create_dir(temp_path_for(&b)).unwrap();
        let err = write_all_atomically(&[(&a, b"a2"), (&b, b"b2")]).unwrap_err();
        assert!(err.to_string().contains("b.bin"), "{err}");
        assert_eq!(fs::read(&a).unwrap(), b"a1");
        assert_eq!(fs::read(&b).unwrap(), b"b1");
        assert!(
            !temp_path_for(&a).exists(),
            "the first temporary is removed"
        );
    }
}
