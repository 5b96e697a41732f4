//! The files of a transfer: the sender's source, the receiver's part file (kept across
//! interruptions for a resume, named by the content hash so a re-offer of the same file
//! finds it) and the final name it is saved under.

use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

/// Bytes read or written at a time.
const BUF: usize = 256 * 1024;

/// A file being sent, as it was when it was hashed.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
}

impl SourceFile {
    /// Writes the file from `offset` to its end into `out`.
    pub(crate) async fn send_from(
        &self,
        offset: u64,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> io::Result<()> {
        let mut file = tokio::fs::File::open(&self.path).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        let mut rest = (&mut file).take(self.size - offset);
        let copied = tokio::io::copy_buf(
            &mut tokio::io::BufReader::with_capacity(BUF, &mut rest),
            out,
        )
        .await?;
        if copied != self.size - offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being sent",
            ));
        }
        out.flush().await
    }
}

/// The SHA-256 of the first `len` bytes of the file at `path` (all of it with `None`), on a
/// blocking thread: hashing 50 MiB takes a noticeable fraction of a second.
pub(crate) async fn sha256(path: PathBuf) -> io::Result<([u8; 32], u64)> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; BUF];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            len += n as u64;
        }
        Ok((hash.finalize().into(), len))
    })
    .await
    .map_err(io::Error::other)?
}

/// Where the part of a file with this hash is kept while it arrives.
pub(crate) fn part_path(downloads: &Path, sha256: &[u8; 32]) -> PathBuf {
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    downloads.join(format!("{hex}.breeze-part"))
}

/// How many bytes of a file with this hash and size are already here (0 if none, or if the
/// part is longer than the file: then it is not a part of it).
pub(crate) fn held(downloads: &Path, sha256: &[u8; 32], size: u64) -> u64 {
    std::fs::metadata(part_path(downloads, sha256))
        .map(|m| m.len())
        .ok()
        .filter(|&len| len <= size)
        .unwrap_or(0)
}

/// `name` in `downloads`, or `name (1)`, `name (2)`… before the extension if taken: a
/// transfer never overwrites a file.
pub(crate) fn free_name(downloads: &Path, name: &str) -> PathBuf {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let mut path = downloads.join(name);
    let mut n = 1;
    while path.exists() {
        path = downloads.join(format!("{stem} ({n}){ext}"));
        n += 1;
    }
    path
}

/// The receiver's part file, open for writing at its end.
pub(crate) struct Part {
    file: tokio::fs::File,
    pub(crate) path: PathBuf,
    pub(crate) held: u64,
}

impl Part {
    /// Opens (or creates) the part, cut to `held` bytes: what the receiver announced.
    pub(crate) async fn open(path: PathBuf, held: u64) -> io::Result<Part> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .await?;
        file.set_len(held).await?;
        file.seek(io::SeekFrom::Start(held)).await?;
        Ok(Part { file, path, held })
    }

    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data).await?;
        self.held += data.len() as u64;
        Ok(())
    }

    /// Flushes what was written, so a hash reads all of it.
    pub(crate) async fn finish(mut self) -> io::Result<PathBuf> {
        self.file.flush().await?;
        self.file.sync_data().await?;
        Ok(self.path)
    }
}
