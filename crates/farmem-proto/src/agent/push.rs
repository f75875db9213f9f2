//! Server-to-server object copies ([`super::op::OBJ_PUSH`]): a client asks the server holding
//! its objects to write copies of them straight into its session on another server, so the
//! bytes cross the network once and not through the client.
//!
//! # Who may move what
//!
//! The source server reads the objects from the session of the connection that asked, so a
//! client can only push its own objects. It writes them into the target session named by
//! `session` and `resume`, which it must present in a hello to the target server (with the
//! target's `token`), exactly as the client's own connections do: only a client that holds a
//! session's resume secret can have objects written into it.

use super::{AgentDecodeError, AgentMessage};
use crate::codec::{Reader, Writer};

/// Arguments of [`super::op::OBJ_PUSH`]: `addr:bytes session:u64 resume:u64 token:bytes
/// ids:list<u64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PushArgs {
    /// The target server's address (`host:port`) as the source server can reach it.
    pub addr: String,
    /// The client's session key on the target server.
    pub session: u64,
    /// That session's resume secret.
    pub resume: u64,
    /// The target server's shared-secret token (empty when none).
    pub token: Vec<u8>,
    /// The objects to copy (same ids on the target).
    pub ids: Vec<u64>,
}

impl std::fmt::Debug for PushArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushArgs")
            .field("addr", &self.addr)
            .field("session", &self.session)
            .field("ids", &self.ids.len())
            .finish_non_exhaustive()
    }
}

impl AgentMessage for PushArgs {
    fn write(&self, w: &mut Writer) {
        w.byte_string(self.addr.as_bytes())
            .u64(self.session)
            .u64(self.resume)
            .byte_string(&self.token)
            .count(self.ids.len());
        for &id in &self.ids {
            w.u64(id);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let addr = r.byte_string()?;
        let addr = String::from_utf8(addr.to_vec()).map_err(|_| AgentDecodeError::BadTag {
            what: "push address (not UTF-8)",
            tag: 0,
        })?;
        let session = r.u64()?;
        let resume = r.u64()?;
        let token = r.byte_string()?.to_vec();
        let n = r.count(8)?;
        let ids = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        Ok(Self {
            addr,
            session,
            resume,
            token,
            ids,
        })
    }
}

/// Result of [`super::op::OBJ_PUSH`]: `sizes:list<u32>`, one per id in order: the size of the
/// copy written, or [`PushResult::MISSING`] for an id the source session does not hold (nothing
/// written for it).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PushResult {
    /// Bytes copied per id, [`PushResult::MISSING`] when absent.
    pub sizes: Vec<u32>,
}

impl PushResult {
    /// The size of an id the source does not hold.
    pub const MISSING: u32 = u32::MAX;
}

impl AgentMessage for PushResult {
    fn write(&self, w: &mut Writer) {
        w.count(self.sizes.len());
        for &s in &self.sizes {
            w.u32(s);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let n = r.count(4)?;
        let sizes = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
        Ok(Self { sizes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_messages_round_trip_and_reject_garbage() {
        let a = PushArgs {
            addr: "127.0.0.1:7000".into(),
            session: 9,
            resume: 0xdead_beef,
            token: b"t".to_vec(),
            ids: vec![1, 2, 3],
        };
        assert_eq!(PushArgs::decode(&a.encode()).unwrap(), a);
        assert!(
            !format!("{a:?}").contains("3735928559"),
            "no secret in Debug"
        );
        let r = PushResult {
            sizes: vec![4, PushResult::MISSING],
        };
        assert_eq!(PushResult::decode(&r.encode()).unwrap(), r);
        let mut bad = a.encode();
        bad.push(0);
        assert!(PushArgs::decode(&bad).is_err());
        assert!(PushArgs::decode(&a.encode()[..10]).is_err());
    }
}
