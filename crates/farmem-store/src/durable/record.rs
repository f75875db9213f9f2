//! The record format shared by the write-ahead log and snapshots.
//!
//! A record is `len:u32 crc:u32 payload[len]`, little-endian, where `crc` is the CRC-32 of the
//! length bytes and the payload. The payload starts with a kind byte. A record whose length is
//! zero, runs past the end of the data, or whose CRC does not match ends the readable data: at
//! the tail of the log it is a torn write, cut at recovery.

use farmem_proto::agent::Reader;

/// Bytes before a record's payload.
pub(crate) const FRAME: usize = 8;
/// Largest payload a record may have (an object of the largest frame, with room to spare).
pub(crate) const MAX_PAYLOAD: usize = (farmem_proto::MAX_FRAME_BODY as usize) + 64;

mod kind {
    pub(super) const SESSION_OPEN: u8 = 1;
    pub(super) const SESSION_CLOSE: u8 = 2;
    pub(super) const PUT: u8 = 3;
    pub(super) const PATCH: u8 = 4;
    pub(super) const FREE: u8 = 5;
    pub(super) const TABLE_PUT: u8 = 6;
    pub(super) const TABLE_REMOVE: u8 = 7;
    pub(super) const TABLE_DROP: u8 = 8;
    pub(super) const SNAPSHOT_BEGIN: u8 = 9;
    pub(super) const SNAPSHOT_END: u8 = 10;
    pub(super) const ANSWER: u8 = 11;
}

/// One state change (or snapshot marker), borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A session was created with this resume secret.
    SessionOpen { session: u64, secret: u64 },
    /// A session ended; its objects and tables are gone.
    SessionClose { session: u64 },
    /// Object `id` of `session` now holds `data`.
    Put {
        session: u64,
        id: u64,
        data: &'a [u8],
    },
    /// Edits of object `id`: `edits` is `count:u32 (offset:u32 len:u32 bytes)*`.
    Patch {
        session: u64,
        id: u64,
        edits: &'a [u8],
    },
    /// Object `id` was freed.
    Free { session: u64, id: u64 },
    /// A hash-table put, its encoded `HtPutArgs`.
    TablePut { session: u64, args: &'a [u8] },
    /// A hash-table remove, its encoded `HtKeysArgs`.
    TableRemove { session: u64, args: &'a [u8] },
    /// A hash table was dropped.
    TableDrop { session: u64, table: u64 },
    /// The answer of non-idempotent request `rid` (empty: ran, answer not kept), for retries.
    Answer {
        session: u64,
        rid: u64,
        answer: &'a [u8],
    },
    /// A snapshot starts; the log from segment `segment` on applies after it.
    SnapshotBegin { segment: u64 },
    /// A snapshot is complete.
    SnapshotEnd { sessions: u64, records: u64 },
}

/// Bytes of the encoded patch edits of `edits`.
pub(crate) fn patch_len<'e>(edits: impl Iterator<Item = (u32, &'e [u8])>) -> usize {
    4 + edits.map(|(_, b)| 8 + b.len()).sum::<usize>()
}

/// Encodes a patch's edits as [`Record::Patch`] stores them.
pub(crate) fn encode_patch<'e>(out: &mut Vec<u8>, edits: impl Iterator<Item = (u32, &'e [u8])>) {
    let at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut n = 0u32;
    for (off, b) in edits {
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
        n += 1;
    }
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// The edits of an encoded patch; `None` when malformed.
pub(crate) fn decode_patch(d: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    let mut r = Reader::new(d);
    let n = r.u32().ok()?;
    let mut out = Vec::with_capacity((n as usize).min(d.len() / 8));
    for _ in 0..n {
        let off = r.u32().ok()?;
        let len = r.u32().ok()? as usize;
        out.push((off, r.bytes(len).ok()?));
    }
    r.finish().ok()?;
    Some(out)
}

impl<'a> Record<'a> {
    /// Bytes of the payload.
    pub(crate) fn payload_len(&self) -> usize {
        1 + match self {
            Record::SessionOpen { .. } => 16,
            Record::SessionClose { .. } | Record::SnapshotBegin { .. } => 8,
            Record::Put { data, .. } => 16 + data.len(),
            Record::Patch { edits, .. } => 16 + edits.len(),
            Record::Answer { answer, .. } => 16 + answer.len(),
            Record::Free { .. } | Record::TableDrop { .. } | Record::SnapshotEnd { .. } => 16,
            Record::TablePut { args, .. } | Record::TableRemove { args, .. } => 8 + args.len(),
        }
    }

    /// Bytes of the whole record.
    pub(crate) fn len(&self) -> usize {
        FRAME + self.payload_len()
    }

    fn kind(&self) -> u8 {
        match self {
            Record::SessionOpen { .. } => kind::SESSION_OPEN,
            Record::SessionClose { .. } => kind::SESSION_CLOSE,
            Record::Put { .. } => kind::PUT,
            Record::Patch { .. } => kind::PATCH,
            Record::Free { .. } => kind::FREE,
            Record::TablePut { .. } => kind::TABLE_PUT,
            Record::TableRemove { .. } => kind::TABLE_REMOVE,
            Record::TableDrop { .. } => kind::TABLE_DROP,
            Record::Answer { .. } => kind::ANSWER,
            Record::SnapshotBegin { .. } => kind::SNAPSHOT_BEGIN,
            Record::SnapshotEnd { .. } => kind::SNAPSHOT_END,
        }
    }

    /// Appends the record (frame and payload) to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(self.len());
        out.extend_from_slice(&[0u8; FRAME]);
        out.push(self.kind());
        let (a, b, tail): (u64, Option<u64>, &[u8]) = match *self {
            Record::SessionOpen { session, secret } => (session, Some(secret), &[]),
            Record::SessionClose { session } => (session, None, &[]),
            Record::Put { session, id, data } => (session, Some(id), data),
            Record::Patch { session, id, edits } => (session, Some(id), edits),
            Record::Answer {
                session,
                rid,
                answer,
            } => (session, Some(rid), answer),
            Record::Free { session, id } => (session, Some(id), &[]),
            Record::TablePut { session, args } | Record::TableRemove { session, args } => {
                (session, None, args)
            }
            Record::TableDrop { session, table } => (session, Some(table), &[]),
            Record::SnapshotBegin { segment } => (segment, None, &[]),
            Record::SnapshotEnd { sessions, records } => (sessions, Some(records), &[]),
        };
        out.extend_from_slice(&a.to_le_bytes());
        if let Some(b) = b {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out.extend_from_slice(tail);
        seal(&mut out[start..]);
    }

    /// Decodes one payload; `None` when it is not a valid record.
    pub(crate) fn decode(p: &'a [u8]) -> Option<Self> {
        let (&k, rest) = p.split_first()?;
        let u = |i: usize| -> Option<u64> {
            rest.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let exact = |n: usize| (rest.len() == n * 8).then_some(());
        Some(match k {
            kind::SESSION_OPEN => {
                exact(2)?;
                Record::SessionOpen {
                    session: u(0)?,
                    secret: u(1)?,
                }
            }
            kind::SESSION_CLOSE => {
                exact(1)?;
                Record::SessionClose { session: u(0)? }
            }
            kind::PUT => Record::Put {
                session: u(0)?,
                id: u(1)?,
                data: rest.get(16..)?,
            },
            kind::PATCH => Record::Patch {
                session: u(0)?,
                id: u(1)?,
                edits: rest.get(16..)?,
            },
            kind::ANSWER => Record::Answer {
                session: u(0)?,
                rid: u(1)?,
                answer: rest.get(16..)?,
            },
            kind::FREE => {
                exact(2)?;
                Record::Free {
                    session: u(0)?,
                    id: u(1)?,
                }
            }
            kind::TABLE_PUT => Record::TablePut {
                session: u(0)?,
                args: rest.get(8..)?,
            },
            kind::TABLE_REMOVE => Record::TableRemove {
                session: u(0)?,
                args: rest.get(8..)?,
            },
            kind::TABLE_DROP => {
                exact(2)?;
                Record::TableDrop {
                    session: u(0)?,
                    table: u(1)?,
                }
            }
            kind::SNAPSHOT_BEGIN => {
                exact(1)?;
                Record::SnapshotBegin { segment: u(0)? }
            }
            kind::SNAPSHOT_END => {
                exact(2)?;
                Record::SnapshotEnd {
                    sessions: u(0)?,
                    records: u(1)?,
                }
            }
            _ => return None,
        })
    }
}

/// Fills in the frame (length and CRC) of an encoded record whose payload follows it.
fn seal(rec: &mut [u8]) {
    let len = (rec.len() - FRAME) as u32;
    rec[..4].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&rec[..4], &rec[FRAME..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// What reading the next record found.
#[cfg(test)]
#[derive(Debug)]
pub(crate) enum Next<'a> {
    /// A valid record and the bytes it took.
    Record(Record<'a>, usize),
    /// A zero length: the end of the written data (the rest is preallocated space).
    End,
    /// A torn or corrupt record: the data cannot be trusted from here on.
    Bad,
}

/// What a record's frame announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A payload of this many bytes follows.
    Payload(usize),
    /// A zero length: the end of the written data (the rest is preallocated space).
    End,
    /// Not a frame: torn or corrupt.
    Bad,
}

/// Reads a record's frame.
pub(crate) fn frame(h: &[u8; FRAME]) -> Frame {
    match u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize {
        0 => Frame::End,
        n if n > MAX_PAYLOAD => Frame::Bad,
        n => Frame::Payload(n),
    }
}

/// The record of frame `h` and `payload`, if its checksum matches and it decodes.
pub(crate) fn open<'a>(h: &[u8; FRAME], payload: &'a [u8]) -> Option<Record<'a>> {
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (checksum(&h[..4], payload) == crc).then_some(())?;
    Record::decode(payload)
}

/// Reads the record at the start of `d`.
#[cfg(test)]
pub(crate) fn next(d: &[u8]) -> Next<'_> {
    let Some(h) = d.first_chunk::<FRAME>() else {
        return if d.iter().all(|&b| b == 0) {
            Next::End
        } else {
            Next::Bad
        };
    };
    match frame(h) {
        Frame::End => Next::End,
        Frame::Bad => Next::Bad,
        Frame::Payload(n) => match d.get(FRAME..FRAME + n).and_then(|p| open(h, p)) {
            Some(r) => Next::Record(r, FRAME + n),
            None => Next::Bad,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Record<'static>> {
        let mut edits = Vec::new();
        encode_patch(&mut edits, [(3u32, &b"ab"[..]), (9, b"xyz")].into_iter());
        let edits: &'static [u8] = Box::leak(edits.into_boxed_slice());
        vec![
            Record::SessionOpen {
                session: 7,
                secret: 9,
            },
            Record::SessionClose { session: 7 },
            Record::Put {
                session: 7,
                id: 1,
                data: b"hello",
            },
            Record::Patch {
                session: 7,
                id: 1,
                edits,
            },
            Record::Free { session: 7, id: 1 },
            Record::Answer {
                session: 7,
                rid: 5,
                answer: b"done",
            },
            Record::TablePut {
                session: 7,
                args: b"args",
            },
            Record::TableRemove {
                session: 7,
                args: b"",
            },
            Record::TableDrop {
                session: 7,
                table: 3,
            },
            Record::SnapshotBegin { segment: 4 },
            Record::SnapshotEnd {
                sessions: 1,
                records: 2,
            },
        ]
    }

    #[test]
    fn every_record_round_trips_and_has_its_announced_length() {
        let mut buf = Vec::new();
        for r in all() {
            let at = buf.len();
            r.encode(&mut buf);
            assert_eq!(buf.len() - at, r.len(), "{r:?}");
        }
        let mut at = 0;
        for r in all() {
            match next(&buf[at..]) {
                Next::Record(got, n) => {
                    assert_eq!(got, r);
                    at += n;
                }
                other => panic!("{other:?} for {r:?}"),
            }
        }
        assert!(matches!(next(&buf[at..]), Next::End));
        let Record::Patch { edits, .. } = all()[3] else {
            unreachable!()
        };
        assert_eq!(
            decode_patch(edits).unwrap(),
            vec![(3, &b"ab"[..]), (9, &b"xyz"[..])]
        );
    }

    #[test]
    fn a_torn_or_flipped_record_is_bad_and_zeros_end_the_data() {
        let mut buf = Vec::new();
        all()[2].encode(&mut buf);
        for cut in 1..buf.len() {
            assert!(matches!(next(&buf[..cut]), Next::Bad), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x10;
            assert!(!matches!(next(&b), Next::Record(..)), "flip at {i}");
        }
        assert!(matches!(next(&[0u8; 64]), Next::End));
        assert!(matches!(next(&[0u8; 3]), Next::End));
    }
}
