//! The few messages of the FUSE kernel protocol (`include/uapi/linux/fuse.h`, major version 7)
//! that a one-file swap filesystem needs: decoding requests read from `/dev/fuse` and encoding
//! replies written back.
//!
//! Every structure is encoded by hand in host byte order (the protocol's order), so this module
//! needs no `unsafe`. Decoding checks every length: a short or inconsistent message gives a
//! [`ProtoError`], never a panic.

use thiserror::Error;

/// Size of `struct fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;
/// Size of `struct fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;
/// The protocol major version spoken here.
pub const MAJOR: u32 = 7;
/// The minor version replied (7.31: `max_pages`, no newer fields needed).
pub const MINOR: u32 = 31;
/// Oldest kernel minor version accepted (7.28 introduced `FUSE_MAX_PAGES`).
pub const MIN_KERNEL_MINOR: u32 = 28;

/// `FOPEN_DIRECT_IO`: bypass the page cache for this open file.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// `FUSE_ASYNC_READ`: several reads of one file may be in flight.
pub const FUSE_ASYNC_READ: u32 = 1 << 0;
/// `FUSE_BIG_WRITES`: writes larger than one page.
pub const FUSE_BIG_WRITES: u32 = 1 << 5;
/// `FUSE_ASYNC_DIO`: asynchronous direct I/O requests.
pub const FUSE_ASYNC_DIO: u32 = 1 << 15;
/// `FUSE_MAX_PAGES`: `max_pages` in the init reply is valid.
pub const FUSE_MAX_PAGES: u32 = 1 << 22;

/// Why a message could not be decoded or encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    /// Fewer bytes than the structure being read.
    #[error("FUSE message truncated: {what} needs {need} bytes, {have} present")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The header's `len` disagrees with the bytes read.
    #[error("FUSE header says {header} bytes but {read} were read")]
    LengthMismatch {
        /// `len` field of the header.
        header: u32,
        /// Bytes actually read.
        read: usize,
    },
    /// A name without its terminating NUL.
    #[error("FUSE name is not NUL-terminated")]
    Unterminated,
    /// The kernel speaks a protocol version this daemon cannot serve.
    #[error("unsupported FUSE protocol {major}.{minor} (need 7.{MIN_KERNEL_MINOR}+)")]
    Version {
        /// Kernel major version.
        major: u32,
        /// Kernel minor version.
        minor: u32,
    },
    /// A reply larger than the protocol's 32-bit length.
    #[error("FUSE reply of {0} bytes is too large")]
    TooLarge(usize),
}

/// Request opcodes this daemon distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// `FUSE_LOOKUP`.
    Lookup,
    /// `FUSE_FORGET` (no reply).
    Forget,
    /// `FUSE_GETATTR`.
    Getattr,
    /// `FUSE_OPEN`.
    Open,
    /// `FUSE_READ`.
    Read,
    /// `FUSE_WRITE`.
    Write,
    /// `FUSE_STATFS`.
    Statfs,
    /// `FUSE_RELEASE`.
    Release,
    /// `FUSE_FSYNC`.
    Fsync,
    /// `FUSE_FLUSH`.
    Flush,
    /// `FUSE_INIT`.
    Init,
    /// `FUSE_OPENDIR`.
    Opendir,
    /// `FUSE_READDIR`.
    Readdir,
    /// `FUSE_RELEASEDIR`.
    Releasedir,
    /// `FUSE_FSYNCDIR`.
    Fsyncdir,
    /// `FUSE_ACCESS`.
    Access,
    /// `FUSE_INTERRUPT` (no reply needed).
    Interrupt,
    /// `FUSE_DESTROY`.
    Destroy,
    /// `FUSE_BATCH_FORGET` (no reply).
    BatchForget,
    /// Anything else, answered with `ENOSYS`.
    Other(u32),
}

impl Opcode {
    /// Maps the wire number.
    pub fn from_u32(n: u32) -> Self {
        match n {
            1 => Self::Lookup,
            2 => Self::Forget,
            3 => Self::Getattr,
            14 => Self::Open,
            15 => Self::Read,
            16 => Self::Write,
            17 => Self::Statfs,
            18 => Self::Release,
            20 => Self::Fsync,
            25 => Self::Flush,
            26 => Self::Init,
            27 => Self::Opendir,
            28 => Self::Readdir,
            29 => Self::Releasedir,
            30 => Self::Fsyncdir,
            34 => Self::Access,
            36 => Self::Interrupt,
            38 => Self::Destroy,
            42 => Self::BatchForget,
            n => Self::Other(n),
        }
    }
}

/// `struct fuse_in_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InHeader {
    /// Total length of the request.
    pub len: u32,
    /// The operation.
    pub opcode: Opcode,
    /// Request id, echoed in the reply.
    pub unique: u64,
    /// Inode the request is about.
    pub nodeid: u64,
}

/// A little cursor over a message, reading host-order integers with length checks.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str, need: usize) -> Result<Self, ProtoError> {
        if buf.len() < need {
            return Err(ProtoError::Truncated {
                what,
                need,
                have: buf.len(),
            });
        }
        Ok(Self { buf, what })
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(ProtoError::Truncated {
                what: self.what,
                need: N,
                have: self.buf.len(),
            })?;
        self.buf = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        self.bytes::<4>().map(u32::from_ne_bytes)
    }

    fn u64(&mut self) -> Result<u64, ProtoError> {
        self.bytes::<8>().map(u64::from_ne_bytes)
    }
}

/// Splits a request read from `/dev/fuse` into its header and body.
///
/// # Errors
/// [`ProtoError::Truncated`] below a header, [`ProtoError::LengthMismatch`] when the header's
/// length is not the number of bytes read.
pub fn decode_request(buf: &[u8]) -> Result<(InHeader, &[u8]), ProtoError> {
    let mut r = Reader::new(buf, "fuse_in_header", IN_HEADER_LEN)?;
    let len = r.u32()?;
    let opcode = Opcode::from_u32(r.u32()?);
    let unique = r.u64()?;
    let nodeid = r.u64()?;
    if len as usize != buf.len() {
        return Err(ProtoError::LengthMismatch {
            header: len,
            read: buf.len(),
        });
    }
    let header = InHeader {
        len,
        opcode,
        unique,
        nodeid,
    };
    Ok((header, &buf[IN_HEADER_LEN..]))
}

/// The interesting part of `struct fuse_init_in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitIn {
    /// Kernel protocol major version.
    pub major: u32,
    /// Kernel protocol minor version.
    pub minor: u32,
    /// Kernel's read-ahead limit.
    pub max_readahead: u32,
    /// Capability flags the kernel offers.
    pub flags: u32,
}

impl InitIn {
    /// Decodes the body of `FUSE_INIT` and checks the version.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`], [`ProtoError::Version`] for a kernel older than 7.28.
    pub fn decode(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body, "fuse_init_in", 16)?;
        let v = Self {
            major: r.u32()?,
            minor: r.u32()?,
            max_readahead: r.u32()?,
            flags: r.u32()?,
        };
        if v.major != MAJOR || v.minor < MIN_KERNEL_MINOR {
            return Err(ProtoError::Version {
                major: v.major,
                minor: v.minor,
            });
        }
        Ok(v)
    }
}

/// `struct fuse_init_out` (the 7.31 layout, 64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOut {
    /// Read-ahead limit.
    pub max_readahead: u32,
    /// Capability flags accepted.
    pub flags: u32,
    /// Background requests allowed.
    pub max_background: u16,
    /// Background requests before the bdi is considered congested.
    pub congestion_threshold: u16,
    /// Largest write payload.
    pub max_write: u32,
    /// Largest request in pages.
    pub max_pages: u16,
}

impl InitOut {
    /// Encodes the reply body.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&MAJOR.to_ne_bytes());
        v.extend_from_slice(&MINOR.to_ne_bytes());
        v.extend_from_slice(&self.max_readahead.to_ne_bytes());
        v.extend_from_slice(&self.flags.to_ne_bytes());
        v.extend_from_slice(&self.max_background.to_ne_bytes());
        v.extend_from_slice(&self.congestion_threshold.to_ne_bytes());
        v.extend_from_slice(&self.max_write.to_ne_bytes());
        v.extend_from_slice(&1u32.to_ne_bytes()); // time_gran: 1 ns
        v.extend_from_slice(&self.max_pages.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes()); // map_alignment
        v.resize(64, 0); // flags2, max_stack_depth, unused
        v
    }
}

/// `struct fuse_read_in` and the header of `struct fuse_write_in` (same leading fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoIn {
    /// File handle from open.
    pub fh: u64,
    /// Byte offset in the file.
    pub offset: u64,
    /// Bytes to read or write.
    pub size: u32,
}

/// Size of `struct fuse_read_in` and of `struct fuse_write_in`.
pub const IO_IN_LEN: usize = 40;

impl IoIn {
    /// Decodes the body of `FUSE_READ`.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`].
    pub fn decode_read(body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body, "fuse_read_in", IO_IN_LEN)?;
        Ok(Self {
            fh: r.u64()?,
            offset: r.u64()?,
            size: r.u32()?,
        })
    }

    /// Decodes the body of `FUSE_WRITE`: the header and the data that follows it.
    ///
    /// # Errors
    /// [`ProtoError::Truncated`] when the data is shorter than `size`.
    pub fn decode_write(body: &[u8]) -> Result<(Self, &[u8]), ProtoError> {
        let mut r = Reader::new(body, "fuse_write_in", IO_IN_LEN)?;
        let io = Self {
            fh: r.u64()?,
            offset: r.u64()?,
            size: r.u32()?,
        };
        let data = &body[IO_IN_LEN..];
        if data.len() < io.size as usize {
            return Err(ProtoError::Truncated {
                what: "write data",
                need: io.size as usize,
                have: data.len(),
            });
        }
        Ok((io, &data[..io.size as usize]))
    }
}

/// Decodes a NUL-terminated name (the body of `FUSE_LOOKUP`).
///
/// # Errors
/// [`ProtoError::Unterminated`].
pub fn decode_name(body: &[u8]) -> Result<&[u8], ProtoError> {
    let end = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtoError::Unterminated)?;
    Ok(&body[..end])
}

/// The attributes of an inode (`struct fuse_attr`, 88 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// `st_mode` (type and permissions).
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
}

impl Attr {
    fn encode_into(&self, v: &mut Vec<u8>) {
        v.extend_from_slice(&self.ino.to_ne_bytes());
        v.extend_from_slice(&self.size.to_ne_bytes());
        v.extend_from_slice(&self.size.div_ceil(512).to_ne_bytes()); // blocks
        v.extend_from_slice(&[0; 24]); // atime, mtime, ctime
        v.extend_from_slice(&[0; 12]); // their nanoseconds
        v.extend_from_slice(&self.mode.to_ne_bytes());
        v.extend_from_slice(&self.nlink.to_ne_bytes());
        v.extend_from_slice(&[0; 12]); // uid 0, gid 0, rdev 0
        v.extend_from_slice(&4096u32.to_ne_bytes()); // blksize
        v.extend_from_slice(&[0; 4]); // flags
    }

    /// `struct fuse_attr_out`: the reply to `FUSE_GETATTR` (attributes valid for `valid_s`).
    pub fn encode_attr_out(&self, valid_s: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(104);
        v.extend_from_slice(&valid_s.to_ne_bytes());
        v.extend_from_slice(&[0; 8]); // attr_valid_nsec, dummy
        self.encode_into(&mut v);
        v
    }

    /// `struct fuse_entry_out`: the reply to `FUSE_LOOKUP`.
    pub fn encode_entry_out(&self, valid_s: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        v.extend_from_slice(&self.ino.to_ne_bytes()); // nodeid
        v.extend_from_slice(&0u64.to_ne_bytes()); // generation
        v.extend_from_slice(&valid_s.to_ne_bytes()); // entry_valid
        v.extend_from_slice(&valid_s.to_ne_bytes()); // attr_valid
        v.extend_from_slice(&[0; 8]); // their nanoseconds
        self.encode_into(&mut v);
        v
    }
}

/// `struct fuse_open_out`: the reply to `FUSE_OPEN`/`FUSE_OPENDIR`.
pub fn encode_open_out(fh: u64, open_flags: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&fh.to_ne_bytes());
    v.extend_from_slice(&open_flags.to_ne_bytes());
    v.extend_from_slice(&[0; 4]);
    v
}

/// `struct fuse_write_out`: the reply to `FUSE_WRITE`.
pub fn encode_write_out(size: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(8);
    v.extend_from_slice(&size.to_ne_bytes());
    v.extend_from_slice(&[0; 4]);
    v
}

/// `struct fuse_statfs_out`: the reply to `FUSE_STATFS` for a file system of `blocks` 4 KiB
/// blocks, all in use.
pub fn encode_statfs_out(blocks: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(80);
    v.extend_from_slice(&blocks.to_ne_bytes());
    v.extend_from_slice(&[0; 16]); // bfree, bavail
    v.extend_from_slice(&1u64.to_ne_bytes()); // files
    v.extend_from_slice(&0u64.to_ne_bytes()); // ffree
    v.extend_from_slice(&4096u32.to_ne_bytes()); // bsize
    v.extend_from_slice(&255u32.to_ne_bytes()); // namelen
    v.extend_from_slice(&4096u32.to_ne_bytes()); // frsize
    v.resize(80, 0);
    v
}

/// A whole reply: `struct fuse_out_header` (with `error` 0) followed by `body`.
///
/// # Errors
/// [`ProtoError::TooLarge`] if the reply does not fit the 32-bit length.
pub fn encode_reply(unique: u64, body: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let len = OUT_HEADER_LEN + body.len();
    let len32 = u32::try_from(len).map_err(|_| ProtoError::TooLarge(len))?;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&len32.to_ne_bytes());
    v.extend_from_slice(&0i32.to_ne_bytes());
    v.extend_from_slice(&unique.to_ne_bytes());
    v.extend_from_slice(body);
    Ok(v)
}

/// An error reply: the header alone with `error = -errno`.
pub fn encode_error(unique: u64, errno: i32) -> [u8; OUT_HEADER_LEN] {
    let mut v = [0u8; OUT_HEADER_LEN];
    v[..4].copy_from_slice(&(OUT_HEADER_LEN as u32).to_ne_bytes());
    v[4..8].copy_from_slice(&(-errno.abs()).to_ne_bytes());
    v[8..].copy_from_slice(&unique.to_ne_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((IN_HEADER_LEN + body.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&opcode.to_ne_bytes());
        v.extend_from_slice(&unique.to_ne_bytes());
        v.extend_from_slice(&nodeid.to_ne_bytes());
        v.extend_from_slice(&[0; 16]); // uid, gid, pid, total_extlen, padding
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_a_write_request() {
        let mut body = Vec::new();
        body.extend_from_slice(&7u64.to_ne_bytes());
        body.extend_from_slice(&8192u64.to_ne_bytes());
        body.extend_from_slice(&4u32.to_ne_bytes());
        body.resize(IO_IN_LEN, 0);
        body.extend_from_slice(b"abcd");
        let msg = request(16, 99, 2, &body);
        let (h, b) = decode_request(&msg).unwrap();
        assert_eq!(h.opcode, Opcode::Write);
        assert_eq!((h.unique, h.nodeid), (99, 2));
        let (io, data) = IoIn::decode_write(b).unwrap();
        assert_eq!(
            io,
            IoIn {
                fh: 7,
                offset: 8192,
                size: 4
            }
        );
        assert_eq!(data, b"abcd");
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        assert!(matches!(
            decode_request(&[0; 10]),
            Err(ProtoError::Truncated { .. })
        ));
        let mut msg = request(15, 1, 2, &[0; IO_IN_LEN]);
        msg.truncate(msg.len() - 1);
        assert!(matches!(
            decode_request(&msg),
            Err(ProtoError::LengthMismatch { .. })
        ));
        assert!(matches!(
            IoIn::decode_read(&[0; 12]),
            Err(ProtoError::Truncated { .. })
        ));
        // A write whose size claims more data than present.
        let mut body = vec![0; IO_IN_LEN];
        body[16..20].copy_from_slice(&100u32.to_ne_bytes());
        body.extend_from_slice(&[1; 10]);
        assert!(matches!(
            IoIn::decode_write(&body),
            Err(ProtoError::Truncated { need: 100, .. })
        ));
        assert_eq!(decode_name(b"swap"), Err(ProtoError::Unterminated));
        assert_eq!(decode_name(b"swap\0junk"), Ok(&b"swap"[..]));
        let mut init = Vec::new();
        for x in [7u32, 20, 0, 0] {
            init.extend_from_slice(&x.to_ne_bytes());
        }
        assert!(matches!(
            InitIn::decode(&init),
            Err(ProtoError::Version { minor: 20, .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300 {
            let mut buf = vec![0u8; len];
            for b in &mut buf {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if len >= 4 {
                buf[..4].copy_from_slice(&(len as u32).to_ne_bytes());
            }
            if let Ok((_, body)) = decode_request(&buf) {
                let _ = IoIn::decode_read(body);
                let _ = IoIn::decode_write(body);
                let _ = InitIn::decode(body);
                let _ = decode_name(body);
            }
        }
    }

    #[test]
    fn replies_have_the_kernel_sizes() {
        let attr = Attr {
            ino: 2,
            size: 1 << 30,
            mode: 0o100600,
            nlink: 1,
        };
        assert_eq!(attr.encode_attr_out(1).len(), 104);
        assert_eq!(attr.encode_entry_out(1).len(), 128);
        assert_eq!(encode_open_out(1, FOPEN_DIRECT_IO).len(), 16);
        assert_eq!(encode_write_out(4096).len(), 8);
        assert_eq!(encode_statfs_out(10).len(), 80);
        let init = InitOut {
            max_readahead: 0,
            flags: 0,
            max_background: 16,
            congestion_threshold: 12,
            max_write: 1 << 20,
            max_pages: 256,
        };
        assert_eq!(init.encode().len(), 64);
        let r = encode_reply(5, &[1, 2, 3]).unwrap();
        assert_eq!(r.len(), 19);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 19);
        let e = encode_error(5, libc::ENOENT);
        assert_eq!(i32::from_ne_bytes([e[4], e[5], e[6], e[7]]), -libc::ENOENT);
    }
}
