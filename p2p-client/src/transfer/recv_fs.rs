//! The receiver's file system work: the partial copy, its sidecar, hashing and the final
//! no-replace move. Blocking; run on tokio's blocking pool.
//!
//! Every open of a name in the output directory uses `O_NOFOLLOW` (Unix), and new files are
//! created with `create_new` (`O_EXCL`, which never follows a symlink either), so a symlink
//! planted at any of our names makes the operation fail rather than write elsewhere.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use shared::transfer::{ResumeKey, SIDECAR_LEN, partial_name, resume_offset, sidecar_name};
use tokio::sync::mpsc;
use tracing::debug;

/// Where a file goes, and where it stays until verified.
pub(super) struct Paths {
    pub(super) target: PathBuf,
    pub(super) partial: PathBuf,
    pub(super) sidecar: PathBuf,
}

impl Paths {
    /// `name` must have passed `validate_name`.
    pub(super) fn new(out_dir: &Path, name: &str) -> Self {
        Self {
            target: out_dir.join(name),
            partial: out_dir.join(partial_name(name)),
            sidecar: out_dir.join(sidecar_name(name)),
        }
    }
}

/// Why a file could not be prepared.
pub(super) enum PrepareError {
    /// Something already has the final name.
    Exists,
    /// The file system has less room than the rest of the file needs.
    NoSpace {
        /// Bytes still to write.
        need: u64,
        /// Bytes available to this user.
        available: u64,
    },
    /// A file system error on `path`.
    Io(PathBuf, io::Error),
}

fn nofollow(opts: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    opts
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_sidecar(path: &Path) -> Option<ResumeKey> {
    let file = nofollow(OpenOptions::new().read(true)).open(path).ok()?;
    let mut bytes = Vec::with_capacity(SIDECAR_LEN + 1);
    file.take(SIDECAR_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    ResumeKey::from_sidecar(&bytes)
}

/// Opens the partial copy to resume it, or creates it afresh (with its sidecar). Returns the
/// file and the offset to resume from; the file's content up to the offset is to be kept.
pub(super) fn prepare(paths: &Paths, key: &ResumeKey) -> Result<(File, u64), PrepareError> {
    match fs::symlink_metadata(&paths.target) {
        Ok(_) => return Err(PrepareError::Exists),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(PrepareError::Io(paths.target.clone(), e)),
    }
    let (file, offset) = open_partial(paths, key)?;
    // Refuse at once a file that cannot fit, rather than fill the disk and fail at the end.
    let need = key.size.saturating_sub(offset);
    if let Some(dir) = paths.partial.parent()
        && let Some(available) = available_space(dir)
        && available < need
    {
        // A fresh copy leaves nothing behind; a partial copy stays for a later resume.
        if offset == 0 {
            drop(file);
            let _ = remove_if_present(&paths.partial);
            let _ = remove_if_present(&paths.sidecar);
        }
        return Err(PrepareError::NoSpace { need, available });
    }
    Ok((file, offset))
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`; `None` if the
/// system cannot say (the check is then skipped).
fn available_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a NUL-terminated C string and `stat` points to writable memory of
        // the right type; statvfs(3) fills it in full when it returns 0.
        let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so the struct is initialised.
        let stat = unsafe { stat.assume_init() };
        // Both fields are 32 bits on some targets, 64 on others.
        #[allow(clippy::useless_conversion)]
        let available = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
        Some(available)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Opens the partial copy to resume (with the offset it holds) or a fresh one (offset 0).
fn open_partial(paths: &Paths, key: &ResumeKey) -> Result<(File, u64), PrepareError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |e| PrepareError::Io(path, e)
    };
    let stored = read_sidecar(&paths.sidecar);
    if let Ok(file) = nofollow(OpenOptions::new().read(true).write(true)).open(&paths.partial) {
        let meta = file.metadata().map_err(io_err(&paths.partial))?;
        let offset = resume_offset(key, stored.as_ref(), meta.len());
        if meta.is_file() && offset > 0 {
            debug!(partial = %paths.partial.display(), offset, "resumable partial copy");
            return Ok((file, offset));
        }
    }
    // Start over: whatever is at our temporary names (stale data, or a symlink, which
    // remove_file removes rather than follows) goes.
    remove_if_present(&paths.partial).map_err(io_err(&paths.partial))?;
    remove_if_present(&paths.sidecar).map_err(io_err(&paths.sidecar))?;
    let file = nofollow(OpenOptions::new().read(true).write(true).create_new(true))
        .open(&paths.partial)
        .map_err(io_err(&paths.partial))?;
    let mut sidecar = nofollow(OpenOptions::new().write(true).create_new(true))
        .open(&paths.sidecar)
        .map_err(io_err(&paths.sidecar))?;
    sidecar
        .write_all(&key.to_sidecar())
        .and_then(|()| sidecar.sync_all())
        .map_err(io_err(&paths.sidecar))?;
    Ok((file, 0))
}

/// Hashes the kept prefix (`offset` bytes) of `file`, then writes and hashes every batch of
/// chunks from `rx` after it until the channel closes, and syncs. Returns the SHA-256 of
/// everything.
///
/// Chunks that arrive are written even if the network side fails later, so an interrupted
/// transfer leaves the longest possible partial copy to resume from.
pub(super) fn write_and_hash(
    mut file: File,
    offset: u64,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut scratch = vec![0u8; super::CHUNK];
    let mut left = offset;
    while left > 0 {
        let n = usize::try_from(left).map_or(scratch.len(), |l| l.min(scratch.len()));
        file.read_exact(&mut scratch[..n])?;
        hasher.update(&scratch[..n]);
        left -= n as u64;
    }
    drop(scratch);
    // Anything after the offset (there is none unless the file changed under us) goes.
    file.set_len(offset)?;
    while let Some(batch) = rx.blocking_recv() {
        write_all_vectored(&mut file, &batch)?;
        for chunk in &batch {
            hasher.update(chunk);
        }
    }
    file.sync_all()?;
    Ok(hasher.finalize().into())
}

/// Writes all of `chunks` with as few system calls as the kernel allows (one `writev` per
/// up to `IOV_MAX` chunks).
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    // Drops leading empty slices, so that an empty `rest` means everything is written.
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Moves the verified partial copy to its name without ever replacing an existing entry,
/// drops the sidecar and syncs the directory so the new name survives a crash.
pub(super) fn commit(paths: &Paths, out_dir: &Path) -> Result<(), PrepareError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |e| PrepareError::Io(path, e)
    };
    match fs::hard_link(&paths.partial, &paths.target) {
        Ok(()) => remove_if_present(&paths.partial).map_err(io_err(&paths.partial))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(PrepareError::Exists),
        // No hard links on this file system: check, then rename (a small race, no worse
        // than what such file systems allow).
        Err(_) => {
            if fs::symlink_metadata(&paths.target).is_ok() {
                return Err(PrepareError::Exists);
            }
            fs::rename(&paths.partial, &paths.target).map_err(io_err(&paths.target))?;
        }
    }
    remove_if_present(&paths.sidecar).map_err(io_err(&paths.sidecar))?;
    sync_dir(out_dir).map_err(io_err(out_dir))
}

/// Deletes the partial copy and its sidecar (after a hash mismatch).
pub(super) fn discard(paths: &Paths) -> io::Result<()> {
    remove_if_present(&paths.partial)?;
    remove_if_present(&paths.sidecar)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
