//! Errors of pool membership changes.

use super::MemberId;
use super::member::MemberState;
use crate::backend::{BackendError, ObjectId};

/// Why a pool could not be built or its membership could not change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A pool needs at least one member.
    #[error("a pool needs at least one member")]
    NoMembers,
    /// Members are numbered by a `u8` over the life of a pool.
    #[error("a pool can have at most {max} members over its life")]
    TooManyMembers {
        /// The limit.
        max: usize,
    },
    /// No member has this id.
    #[error("no member {0:?} in this pool")]
    UnknownMember(MemberId),
    /// The operation needs a live member.
    #[error("member {member} is {state:?}, not live")]
    NotLive {
        /// The member's name.
        member: String,
        /// Its state.
        state: MemberState,
    },
    /// Draining would lose the last copy of an object: no other member has room for it. The
    /// member is live again, with the objects not yet moved.
    #[error(
        "cannot drain {member}: it holds the last copy of object {id:#x} and no other member has room"
    )]
    NoRoom {
        /// The member being drained.
        member: String,
        /// The object that did not fit anywhere else.
        id: ObjectId,
    },
    /// A member can rejoin only while it is down: not live, not drained or removed by the
    /// operator, not taken back already.
    #[error("member {member} ({state:?}) cannot rejoin: {why}")]
    NoRejoin {
        /// The member's name.
        member: String,
        /// Its state.
        state: MemberState,
        /// Why not.
        why: &'static str,
    },
    /// Objects kept being written so fast that they could not be moved.
    #[error("drain of {member} stalled with {remaining} objects left")]
    DrainStalled {
        /// The member being drained.
        member: String,
        /// Objects still on it.
        remaining: usize,
    },
    /// The pool's member source could not be resolved.
    #[error("cannot resolve {name}")]
    Resolve {
        /// The name.
        name: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The redundancy scheme's parameters are out of range.
    #[error("invalid redundancy scheme: {0}")]
    Scheme(String),
    /// A member failed while the pool was being built.
    #[error("member backend failed")]
    Backend(#[from] BackendError),
}
