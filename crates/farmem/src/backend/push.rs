//! Server-to-server copies: what a memory server needs to write objects into this client's
//! session on another server ([`farmem_proto::agent::op::OBJ_PUSH`]).

use farmem_proto::agent::PushArgs;

use super::ObjectId;

/// This client's session on one memory server, as another server needs it to write copies
/// into it directly ([`super::Backend::push_target`]). Holds the session's resume secret: hand
/// it only to servers of the same deployment (the pool gives it to the server it copies from).
#[derive(Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// The server's address as this client reaches it.
    pub addr: String,
    /// The session key.
    pub session: u64,
    /// The session's resume secret.
    pub resume: u64,
    /// The server's shared-secret token (empty when none).
    pub token: Vec<u8>,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTarget")
            .field("addr", &self.addr)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl PushTarget {
    /// The arguments of a push of `ids` to this target.
    pub(crate) fn args(&self, ids: Vec<ObjectId>) -> PushArgs {
        PushArgs {
            addr: self.addr.clone(),
            session: self.session,
            resume: self.resume,
            token: self.token.clone(),
            ids,
        }
    }
}
