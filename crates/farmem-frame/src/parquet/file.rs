//! A file for the Parquet reader with positional reads: the column readers of a row group
//! (several at once, on several threads) each keep their own position, where the readers of a
//! [`std::fs::File`] share one and corrupt each other's pages.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use ::parquet::file::reader::{ChunkReader, Length};

/// A Parquet file opened for [`super::read_parquet`].
#[derive(Debug, Clone)]
pub struct ParquetFile(Arc<File>);

impl ParquetFile {
    /// Opens the file at `path`.
    ///
    /// # Errors
    /// The I/O error of opening it.
    pub fn open(path: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        Ok(Self(Arc::new(File::open(path)?)))
    }
}

impl From<File> for ParquetFile {
    fn from(f: File) -> Self {
        Self(Arc::new(f))
    }
}

/// A reader of a [`ParquetFile`] from an offset on, with its own position.
#[derive(Debug)]
pub struct FileAt {
    file: Arc<File>,
    pos: u64,
}

impl Read for FileAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Length for ParquetFile {
    fn len(&self) -> u64 {
        self.0.metadata().map_or(0, |m| m.len())
    }
}

impl ChunkReader for ParquetFile {
    type T = BufReader<FileAt>;

    fn get_read(&self, start: u64) -> ::parquet::errors::Result<Self::T> {
        let at = FileAt {
            file: self.0.clone(),
            pos: start,
        };
        Ok(BufReader::with_capacity(1 << 16, at))
    }

    fn get_bytes(&self, start: u64, length: usize) -> ::parquet::errors::Result<bytes::Bytes> {
        let mut buf = vec![0; length];
        self.0.read_exact_at(&mut buf, start)?;
        Ok(buf.into())
    }
}
