//! A memory pool that survives server failures: replication, failover, repair and run-time
//! membership, as a layer over one [`Backend`] per server.
//!
//! A [`PoolBackend`] is itself a [`Backend`]. It keeps a *location table* (object id -> the
//! members holding it, 8 bytes of entry per object in a sharded hash map) instead of a fixed hash,
//! so new objects go where there is free space (power of two choices among live members, by
//! free bytes from periodic `stats()` minus bytes placed since) and only the objects of a member
//! that comes or goes ever move.
//!
//! - **Writes** ([`Backend::put_many`], [`Backend::patch_many`], [`Backend::free`], mutating
//!   hash-table agent operations) are batched per member and sent to all members in parallel (one
//!   round trip per member); they are acknowledged once every live replica holds them.
//! - **Reads** go to one replica (the least loaded live one) and fail over to the next; a
//!   program sees an error only when every replica of an object is gone
//!   ([`BackendError::Unavailable`](crate::backend::BackendError::Unavailable), naming the servers).
//!   A read does not wait for a silent server to be declared down: after
//!   [`PoolConfig::read_patience`] without a byte from it (a server killed with SIGKILL stays
//!   silent until its host has freed its memory) the read is asked of another replica, and that
//!   member is asked last for a while. The pool sets the patience on its members' backends
//!   ([`Backend::set_read_patience`]): direct reads through a member's backend may give up too
//!   ([`BackendError::Silent`](crate::backend::BackendError::Silent)).
//! - **Server-side tables** answer "no such key" from any member that lacks them, so a table
//!   read is trusted only if the member still holds the table by the location table after the
//!   answer (a mover drops the old copy only after switching the entry); otherwise it is asked
//!   again.
//! - **Failures**: a member answering with a connection-class error ([`is_member_failure`]) is
//!   marked [`MemberState::Down`] at once and what it holds is never read again; whole-object
//!   writes go to substitutes, and a background thread restores the redundancy of every object
//!   that lost a copy in batches, yielding to the application and optionally capped by a token
//!   bucket ([`PoolConfig::repair_rate`]).
//! - **Rejoins**: a down member's server is probed with back-off ([`PoolConfig::rejoin_after`]),
//!   each probe on a thread of its own. When it answers with the member's session still there
//!   (it was only slow, frozen or cut off), the session is *revived* under the member's id
//!   ([`Backend::resume`]): what the location table still places on it is readable again at
//!   once (objects whose only copies it held included), repair moves it to live members, and
//!   the session is then closed, freeing every copy the pool wrote off there; the server also
//!   joins as a new member over a fresh session. Erasure-coded pools revive the same way:
//!   the spans the coded layout still places on the session serve reads again (stripes that
//!   lost more than `m` spans while their servers were frozen are readable again) until the
//!   coded repair rebuilds them onto live members. When the session is gone (the server
//!   restarted), the server joins again as a new, empty member ([`Backend::renew`]), and
//!   objects whose only copies (or stripes whose spans) it held stay unavailable. A member
//!   the operator drained or removed is never taken back. Repair then puts copies and
//!   parity on the new member (`rejoin.rs` says why nothing stale is ever read). A server can also be added as a new member by hand ([`PoolBackend::add_member`]),
//!   and pools that know their servers' addresses ([`PoolBackend::connect`]) connect to an
//!   address again when its member cannot renew its session.
//! - **Membership**: [`PoolBackend::add_member`], [`PoolBackend::drain_member`] (moves every
//!   object away while the program keeps running), [`PoolBackend::remove_member`]; or a
//!   [`Membership`] source the pool follows by itself (a DNS name re-resolved periodically: new
//!   addresses join, vanished ones are drained and removed).
//! - **Shrinking servers**: a server whose operator (`farmem-server ctl shrink`) or host
//!   memory pressure lowered its capacity asks its clients to move the excess away
//!   ([`StoreStats::reclaim_bytes`](crate::backend::StoreStats::reclaim_bytes)); the pool moves
//!   enough objects off it with the mover below, never dropping a copy without a replacement.
//!
//! # Moving an object without losing a racing write
//!
//! Each table entry carries a count of writes in flight and a version bumped when a write starts
//! and ends. A mover (repair or drain) snapshots an idle entry, copies the object from a live
//! replica to the new member, then switches the entry under its shard lock only if it is still
//! idle at the same version; otherwise it copies again. Readers of the old copy that find it
//! freed retry with the new entry. Repair and drains move plain objects in batches (many
//! objects per request, several requests in flight); the batched protocol and why it loses no
//! write or free are in the `mover` module's docs (`pool/mover.rs`).
//!
//! # Remote agent
//!
//! [`Backend::compute`] runs on a live replica of its `route` object. Server-side hash tables
//! (`HT_*`) are replicated like objects: mutating operations go to every replica, lookups to one,
//! and repair copies a table page by page. The pool is also the [`Sites`](crate::backend::Sites)
//! of offloaded vector operations (`compute.rs`): a vector's chunks sit on different members, so
//! an operation picks one live replica per chunk, sends each member one request for the part over
//! the chunks it holds (members in parallel) and merges the answers; a member that fails
//! mid-operation has its part computed again on the other replicas. Output chunks the agent
//! writes on a member are entered in the location table at once and copied to the scheme's
//! other replicas.
//!
//! # Erasure coding
//!
//! [`Redundancy::Coded`] `{ k, m }` is Carbink's scheme: each object stays whole on one member
//! (a read is one request, unchanged), objects are packed into spans, and each stripe of `k`
//! spans on `k` members gets `m` parity spans on `m` others. It has its own data path and
//! maintenance thread (sealing, degraded reads, rebuild, compaction: see [`coded`]); membership,
//! failure detection and member statistics are the pool's.
//!
//! ```
//! use std::sync::Arc;
//! use farmem::{Backend, EmbeddedStore};
//! use farmem::backend::{PoolBackend, PoolConfig, Redundancy};
//! let members: Vec<Arc<dyn Backend>> =
//!     (0..3).map(|_| Arc::new(EmbeddedStore::new()) as Arc<dyn Backend>).collect();
//! let pool = PoolBackend::new(members, PoolConfig::new(Redundancy::replicas(2))).unwrap();
//! pool.put(7, b"hello").unwrap();
//! assert_eq!(pool.locations(7).unwrap().len(), 2);
//! assert_eq!(pool.get(7).unwrap(), b"hello");
//! ```

pub mod coded;
mod compute;
mod discover;
mod error;
mod fanout;
mod fault;
mod member;
mod membership;
mod mixed;
mod mover;
mod ops;
mod pacing;
mod read;
mod rejoin;
mod repair;
mod scheme;
mod table;
mod table_copy;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use self::coded::{CodedStats, CodingOptions};
pub use self::discover::{Connector, MemberSource, Resolver, SystemResolver, TcpConnector};
pub use self::error::PoolError;
pub use self::fault::{Fault, FaultyBackend};
use self::member::{Dice, Member};
pub use self::member::{MemberState, is_member_failure};
pub use self::membership::Membership;
use self::membership::{Roster, Watcher};
pub use self::repair::RepairStats;
use self::repair::Repairer;
pub use self::scheme::{MAX_CODED_SHARDS, MAX_REPLICAS, Redundancy};
use self::table::{Ix, LocationTable};
use super::{Backend, ObjectId};

/// The most members a pool can have over its life (member ids are never reused).
pub const MAX_MEMBERS: usize = 255;

/// The name of a member within its pool (its position in the order members were added).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub usize);

/// Settings of a [`PoolBackend`].
///
/// ```
/// use std::time::Duration;
/// use farmem::backend::{PoolConfig, Redundancy};
/// let cfg = PoolConfig::new(Redundancy::replicas(2))
///     .repair_rate(Some(100 << 20))
///     .maintenance_interval(Duration::from_millis(200));
/// assert_eq!(cfg.redundancy.copies(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The redundancy scheme.
    pub redundancy: Redundancy,
    /// Bytes per second repair and drains may copy (`None`: no cap). Without a cap they still
    /// yield to the application: fewer batches at once when its requests slow down (see
    /// [`PoolConfig::repair_share`]), every batch when it has none in flight.
    pub repair_rate: Option<u64>,
    /// How often the background thread refreshes member statistics and looks for objects to
    /// repair (it also wakes at once when a member fails or leaves).
    pub maintenance_interval: Duration,
    /// A read waiting on a member whose server has sent nothing for this long is asked of
    /// another replica ([`Backend::set_read_patience`] on every member; `None`: reads wait for
    /// the member's failure to be detected). A killed server stays silent, not refused, until
    /// its host has freed its memory (tens of milliseconds per GiB), so this bounds the stall a
    /// read sees when a server dies. Default 20 ms.
    pub read_patience: Option<Duration>,
    /// Whether repair and drains have memory servers copy objects to each other directly
    /// (`OBJ_PUSH`: the bytes cross the network once and skip the client) when both members are
    /// single TCP servers; a copy the servers cannot make goes through the client. Turn it off
    /// when the servers cannot reach each other at the addresses the client uses. Default off:
    /// on the development VM it did not measurably beat copies through the client.
    pub server_to_server: bool,
    /// The most (0.01 to 1) of the mover's full pace (four batches in flight) repair and drains
    /// may take while the application has requests in flight. Within it, a controller on the
    /// application's request latency sets the pace: more batches at once while the
    /// application's calls stay within 1.5x of their latency with no mover running, fewer
    /// many when they grow past it. Under a quarter it is a duty cycle: at 0.125, one batch
    /// at a time, and after a batch of `d` seconds the next waits `d`. With no application
    /// request in flight every batch runs. Default 1 (the controller alone decides).
    pub repair_share: f64,
    /// The application's request latency the repair and drain pacing aims under, as a multiple
    /// of its latency with no mover running (at least 1.05). Higher: faster repair, slower
    /// application. Default 1.5.
    pub repair_target: f64,
    /// Tuning of a [`Redundancy::Coded`] scheme (ignored by the others).
    pub coding: CodingOptions,
    /// Under [`Redundancy::Coded`]: objects of at least this many bytes are erasure-coded, and
    /// smaller ones are replicated on [`Redundancy::copies`] members (`m + 1`: they survive as
    /// many failures as the coded ones), so that a program's large containers (vector chunks,
    /// columns, paging regions) take about `(k + m) / k` times their bytes while its small
    /// objects keep one-request writes and reads. An object written again with a size across
    /// the line changes path. Default 0: every object coded. Ignored by the other schemes, and
    /// for objects whose id carries another [`Protection`](crate::backend::Protection) (a
    /// container can be replicated or coded whatever the size of its objects).
    pub code_from: usize,
    /// A member that went down is probed this long after (then with a doubling back-off, up to
    /// [`PoolConfig::rejoin_max`]); when its server answers with the member's session still
    /// there, the session is revived with its data (then emptied by repair and closed) and the
    /// server joins as a new member too; when the session is gone, the server rejoins as a new,
    /// empty member (see [`MemberState::Down`]). A member taken back that
    /// fails again within `rejoin_max` waits twice as long before the next attempt, so a
    /// flapping server costs few member ids ([`MAX_MEMBERS`]). `None`: down members are never
    /// taken back. Default 1 s.
    pub rejoin_after: Option<Duration>,
    /// The longest wait between two probes of a down member. Default 15 s: half the servers'
    /// default session lease (`--session-lease`, 30 s), which a server counts from when it runs
    /// again after a freeze; a probe later than the lease finds the session, and the data only
    /// it held, gone. Keep it below the lease.
    pub rejoin_max: Duration,
}

impl PoolConfig {
    /// `redundancy`, repair and drains paced by the application's load but not capped,
    /// maintenance every 500 ms, copies through the client, repair paced by the application's
    /// request latency only.
    pub fn new(redundancy: Redundancy) -> Self {
        Self {
            redundancy,
            repair_rate: None,
            maintenance_interval: Duration::from_millis(500),
            read_patience: Some(Duration::from_millis(20)),
            server_to_server: false,
            repair_share: 1.0,
            repair_target: pacing::TARGET,
            coding: CodingOptions::default(),
            code_from: 0,
            rejoin_after: Some(Duration::from_secs(1)),
            rejoin_max: Duration::from_secs(15),
        }
    }

    /// Sets [`PoolConfig::rejoin_after`] and [`PoolConfig::rejoin_max`] (`first: None`: down
    /// members are never taken back).
    ///
    /// ```
    /// use std::time::Duration;
    /// use farmem::backend::{PoolConfig, Redundancy};
    /// let cfg = PoolConfig::new(Redundancy::replicas(2)).rejoin(None, Duration::from_secs(30));
    /// assert!(cfg.rejoin_after.is_none());
    /// ```
    #[must_use]
    pub fn rejoin(mut self, first: Option<Duration>, max: Duration) -> Self {
        self.rejoin_after = first;
        self.rejoin_max = first.map_or(max, |f| max.max(f));
        self
    }

    /// Sets [`PoolConfig::code_from`]: under a coded scheme, objects below `bytes` are
    /// replicated.
    ///
    /// ```
    /// use farmem::backend::{PoolConfig, Redundancy};
    /// // Erasure-code what is 16 KiB or larger, replicate the rest 3 times.
    /// let cfg = PoolConfig::new(Redundancy::coded(4, 2)).code_from(16 << 10);
    /// assert_eq!(cfg.code_from, 16 << 10);
    /// ```
    #[must_use]
    pub fn code_from(mut self, bytes: usize) -> Self {
        self.code_from = bytes;
        self
    }

    /// Sets [`PoolConfig::repair_share`].
    #[must_use]
    pub fn repair_share(mut self, share: f64) -> Self {
        self.repair_share = share;
        self
    }

    /// Sets [`PoolConfig::repair_target`].
    #[must_use]
    pub fn repair_target(mut self, latency_multiple: f64) -> Self {
        self.repair_target = latency_multiple;
        self
    }

    /// Turns server-to-server copies on or off (see [`PoolConfig::server_to_server`]).
    #[must_use]
    pub fn server_to_server(mut self, on: bool) -> Self {
        self.server_to_server = on;
        self
    }

    /// Sets the read patience (`None`: reads wait for failure detection).
    #[must_use]
    pub fn read_patience(mut self, patience: Option<Duration>) -> Self {
        self.read_patience = patience;
        self
    }

    /// Sets the tuning of a [`Redundancy::Coded`] scheme.
    #[must_use]
    pub fn coding(mut self, opts: CodingOptions) -> Self {
        self.coding = opts;
        self
    }

    /// Sets the repair bandwidth in bytes per second (`None`: unlimited).
    #[must_use]
    pub fn repair_rate(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.repair_rate = bytes_per_sec;
        self
    }

    /// Sets the maintenance interval.
    #[must_use]
    pub fn maintenance_interval(mut self, every: Duration) -> Self {
        self.maintenance_interval = every;
        self
    }
}

/// One member as seen by [`PoolBackend::members`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: MemberId,
    /// Its backend's [`Backend::describe`].
    pub name: String,
    /// Its state.
    pub state: MemberState,
    /// Objects the location table places on it.
    pub objects: usize,
    /// For a member that went down: the member its server rejoined the pool as.
    pub rejoined_as: Option<MemberId>,
}

/// Space and state of a pool, from [`PoolBackend::pool_stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Objects (and server-side tables) in the location table.
    pub objects: usize,
    /// Heap bytes of the location table.
    pub table_bytes: usize,
    /// Objects with fewer live copies than the scheme wants.
    pub under_replicated: usize,
    /// Objects with no live copy at all.
    pub unavailable: usize,
    /// Repair and drain progress.
    pub repair: RepairStats,
    /// Down members whose server answered again and rejoined the pool (as new members).
    pub rejoins: u64,
}

pub(crate) struct Inner {
    pub(crate) cfg: PoolConfig,
    members: RwLock<Arc<[Arc<Member>]>>,
    pub(crate) table: LocationTable,
    pub(crate) dice: Dice,
    pub(crate) repair: Repairer,
    /// One membership change at a time.
    membership: Mutex<()>,
    /// Down members taken back so far.
    rejoins: AtomicU64,
    /// The erasure-coded data path, if any (weak: the engine holds this `Inner`), which a
    /// rejoin asks whether a member still holds spans nothing else can rebuild.
    pub(crate) coded_engine: RwLock<Option<std::sync::Weak<coded::Engine>>>,
}

impl Inner {
    /// The current member list (indexed by [`Ix`]).
    pub(crate) fn members(&self) -> Arc<[Arc<Member>]> {
        self.members.read().clone()
    }

    /// Marks member `ix` down after a connection-class failure and wakes the repairer, but only
    /// while it is still the member `seen` (the snapshot of the list the failing call used) has
    /// at `ix`: the failure of a backend replaced since (a down member revived over its resumed
    /// session, see `rejoin`) says nothing of the member in its place now.
    pub(crate) fn mark_down(&self, seen: &[Arc<Member>], ix: Ix, err: &super::BackendError) {
        let members = self.members();
        let Some(m) = members.get(usize::from(ix)) else {
            return;
        };
        if seen
            .get(usize::from(ix))
            .is_some_and(|s| !Arc::ptr_eq(s, m))
        {
            return;
        }
        if m.mark_down() {
            tracing::warn!(member = %m.name, error = %err, "pool member down");
            self.repair.wake();
        }
    }

    /// Re-reads every serving member's statistics (its free space); a member that fails with
    /// a connection-class error is marked down.
    pub(crate) fn refresh_members(&self) {
        let members = self.members();
        for (i, m) in members.iter().enumerate() {
            if m.serves()
                && let Err(e) = m.refresh()
                && is_member_failure(&e)
            {
                self.mark_down(&members, i as Ix, &e);
            }
        }
    }

    /// [`PoolBackend::add_member`].
    pub(crate) fn add_member(&self, backend: Arc<dyn Backend>) -> Result<MemberId, PoolError> {
        let _g = self.membership.lock();
        let member = Arc::new(Member::new(backend, self.cfg.read_patience));
        let mut list = self.members.write();
        if list.len() >= MAX_MEMBERS {
            return Err(PoolError::TooManyMembers { max: MAX_MEMBERS });
        }
        let mut v = list.to_vec();
        v.push(member);
        *list = v.into();
        drop(list);
        // Objects short of copies (no room before) may fit now.
        self.repair.wake();
        Ok(MemberId(self.members().len() - 1))
    }

    pub(crate) fn member(&self, id: MemberId) -> Result<Arc<Member>, PoolError> {
        self.members()
            .get(id.0)
            .cloned()
            .ok_or(PoolError::UnknownMember(id))
    }

    /// [`PoolBackend::drain_member`].
    pub(crate) fn drain_member(&self, id: MemberId) -> Result<(), PoolError> {
        let _g = self.membership.lock();
        let m = self.member(id)?;
        if !m.transition(MemberState::Live, MemberState::Draining) {
            return Err(PoolError::NotLive {
                member: m.name.clone(),
                state: m.state(),
            });
        }
        // Should it fail during the drain, it stays out of the pool.
        m.withdraw();
        let result = repair::drain(self, id.0 as Ix);
        match &result {
            Ok(()) => {
                m.transition(MemberState::Draining, MemberState::Drained);
            }
            Err(_) => {
                if m.transition(MemberState::Draining, MemberState::Live) {
                    m.clear_withdrawn();
                }
            }
        }
        result
    }

    /// [`PoolBackend::remove_member`].
    pub(crate) fn remove_member(&self, id: MemberId) -> Result<(), PoolError> {
        let _g = self.membership.lock();
        let m = self.member(id)?;
        m.withdraw();
        m.set_state(MemberState::Removed);
        self.repair.wake();
        Ok(())
    }
}

/// A [`Backend`] over several member backends with redundancy, failover, repair and run-time
/// membership (see the [module docs](self)).
pub struct PoolBackend {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    /// Follows the member source, re-admits, moves data off shrinking servers.
    watcher: Option<Watcher>,
    /// The data path of an erasure-coded pool.
    coded: Option<coded::Coded>,
}

impl std::fmt::Debug for PoolBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBackend")
            .field("redundancy", &self.inner.cfg.redundancy)
            .field("members", &self.inner.members())
            .finish_non_exhaustive()
    }
}

impl PoolBackend {
    /// A pool over `members` (one backend per server) that starts its maintenance thread.
    ///
    /// # Errors
    /// [`PoolError::NoMembers`], [`PoolError::TooManyMembers`].
    pub fn new(members: Vec<Arc<dyn Backend>>, cfg: PoolConfig) -> Result<Self, PoolError> {
        Self::build(members, cfg, None)
    }

    /// A pool that manages its own members: it connects to the servers of `membership`'s
    /// source, follows the source (a DNS name is re-resolved periodically), and re-admits a
    /// server that was down once it answers again at its address.
    ///
    /// Every server of a static list must answer now; of a DNS answer, at least one (the others
    /// are retried in the background).
    ///
    /// # Errors
    /// [`PoolError::Resolve`], [`PoolError::NoMembers`] (an empty answer),
    /// [`PoolError::Backend`] when a server cannot be reached.
    pub fn connect(membership: Membership, cfg: PoolConfig) -> Result<Self, PoolError> {
        let addrs = membership
            .source
            .addresses()
            .map_err(|source| PoolError::Resolve {
                name: membership.source.describe().to_string(),
                source,
            })?;
        let strict = matches!(membership.source, MemberSource::Static(_));
        let mut members = Vec::new();
        let mut joined = Vec::new();
        let mut last_err = None;
        for a in addrs {
            match membership.connector.connect(&a) {
                Ok(b) => {
                    joined.push((a, Some(MemberId(members.len()))));
                    members.push(b);
                }
                Err(e) if strict => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(addr = %a, error = %e, "pool member unreachable, will retry");
                    joined.push((a, None));
                    last_err = Some(e);
                }
            }
        }
        if members.is_empty()
            && let Some(e) = last_err
        {
            return Err(e.into());
        }
        Self::build(members, cfg, Some(Roster::new(membership, joined)))
    }

    fn build(
        members: Vec<Arc<dyn Backend>>,
        cfg: PoolConfig,
        roster: Option<Roster>,
    ) -> Result<Self, PoolError> {
        if members.is_empty() {
            return Err(PoolError::NoMembers);
        }
        if members.len() > MAX_MEMBERS {
            return Err(PoolError::TooManyMembers { max: MAX_MEMBERS });
        }
        if let Redundancy::Coded { k, m } = cfg.redundancy {
            coded::check_scheme(k, m).map_err(PoolError::Scheme)?;
        }
        let list: Vec<Arc<Member>> = members
            .into_iter()
            .map(|b| Arc::new(Member::new(b, cfg.read_patience)))
            .collect();
        let inner = Arc::new(Inner {
            repair: Repairer::new(cfg.repair_rate, cfg.repair_share, cfg.repair_target),
            cfg,
            members: RwLock::new(list.into()),
            table: LocationTable::new(),
            dice: Dice::default(),
            membership: Mutex::new(()),
            rejoins: AtomicU64::new(0),
            coded_engine: RwLock::new(None),
        });
        let bg = inner.clone();
        let thread = std::thread::Builder::new()
            .name("farmem-pool".into())
            .spawn(move || repair::maintenance(&bg))
            .ok();
        if thread.is_none() {
            tracing::warn!("pool maintenance thread could not start: repairs run on demand only");
        }
        let coded = match inner.cfg.redundancy {
            Redundancy::Coded { k, m } => {
                Some(coded::Coded::start(inner.clone(), k, m, inner.cfg.coding))
            }
            _ => None,
        };
        if let Some(c) = &coded {
            *inner.coded_engine.write() = Some(Arc::downgrade(&c.engine));
        }
        let watcher = Some(Watcher::start(inner.clone(), roster));
        Ok(Self {
            inner,
            thread,
            watcher,
            coded,
        })
    }

    /// The redundancy scheme.
    pub fn redundancy(&self) -> Redundancy {
        self.inner.cfg.redundancy
    }

    /// Adds a member (a new or restarted, empty server); new objects start going to it.
    ///
    /// # Errors
    /// [`PoolError::TooManyMembers`] after [`MAX_MEMBERS`] members over the pool's life.
    pub fn add_member(&self, backend: Arc<dyn Backend>) -> Result<MemberId, PoolError> {
        self.inner.add_member(backend)
    }

    /// Changes the pacing of repair and drains from now on: [`PoolConfig::repair_share`] and
    /// [`PoolConfig::repair_target`] (a mover running starts its window afresh).
    pub fn set_repair_pacing(&self, share: f64, target: f64) {
        self.inner.repair.pacer.set_pacing(share, target);
    }

    /// Moves every object off member `id` while the program keeps reading and writing, then
    /// leaves it [`MemberState::Drained`] (holding nothing, taking nothing).
    ///
    /// Each object gets a copy on another member before the drained copy is dropped; when no
    /// other member has room, an object that still has other copies just loses this one.
    ///
    /// # Errors
    /// [`PoolError::UnknownMember`], [`PoolError::NotLive`], [`PoolError::NoRoom`] when this
    /// member holds the last copy of an object that fits nowhere else (the member is live again),
    /// [`PoolError::DrainStalled`].
    pub fn drain_member(&self, id: MemberId) -> Result<(), PoolError> {
        self.inner.drain_member(id)
    }

    /// Detaches member `id` at once; objects that had a copy on it are repaired from their
    /// other copies in the background (drain first to move them before).
    ///
    /// # Errors
    /// [`PoolError::UnknownMember`].
    pub fn remove_member(&self, id: MemberId) -> Result<(), PoolError> {
        self.inner.remove_member(id)
    }

    /// Every member ever added, with its state and the objects placed on it.
    pub fn members(&self) -> Vec<MemberInfo> {
        let members = self.inner.members();
        let mut counts = vec![0usize; members.len()];
        self.inner.table.select(|e| {
            for &m in e.members() {
                // Members added after the snapshot have no count here.
                if let Some(c) = counts.get_mut(usize::from(m)) {
                    *c += 1;
                }
            }
            false
        });
        members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberInfo {
                id: MemberId(i),
                name: m.name.clone(),
                state: m.state(),
                objects: counts[i],
                rejoined_as: m.successor().map(|s| MemberId(usize::from(s))),
            })
            .collect()
    }

    /// The members the location table places object `id` on (`None`: unknown id). An
    /// erasure-coded object is whole on one member.
    pub fn locations(&self, id: ObjectId) -> Option<Vec<MemberId>> {
        if let Some(c) = self.coded()
            && let Some(m) = c.location(id)
        {
            return Some(vec![MemberId(usize::from(m))]);
        }
        self.inner.table.get(id).map(|e| {
            e.members()
                .iter()
                .map(|&m| MemberId(usize::from(m)))
                .collect()
        })
    }

    /// Member `id`'s own statistics ([`Backend::stats`] of its backend: of its server, or of
    /// this pool's session on it when the server keeps clients apart).
    ///
    /// # Errors
    /// [`PoolError::UnknownMember`]; [`PoolError::Backend`] when the member does not answer (a
    /// member that went down and rejoined answers as its new member only).
    pub fn member_stats(&self, id: MemberId) -> Result<super::StoreStats, PoolError> {
        Ok(self.inner.member(id)?.backend.stats()?)
    }

    /// The state of member `id` (`None`: unknown id); cheap, unlike [`PoolBackend::members`].
    pub fn member_state(&self, id: MemberId) -> Option<MemberState> {
        self.inner.members().get(id.0).map(|m| m.state())
    }

    /// Repair and drain progress; cheap, unlike [`PoolBackend::pool_stats`] (which also counts
    /// the objects short of copies).
    pub fn repair_stats(&self) -> RepairStats {
        self.inner.repair.stats()
    }

    /// Table size, redundancy state and repair progress.
    pub fn pool_stats(&self) -> PoolStats {
        let members = self.inner.members();
        let want = self.inner.cfg.redundancy.copies();
        let (mut under, mut unavailable) = (0, 0);
        self.inner.table.select(|e| {
            // Members added after the snapshot are live.
            let state = |m: Ix| members.get(usize::from(m)).map(|m| m.state());
            let live = e
                .members()
                .iter()
                .filter(|&&m| state(m).is_none_or(|s| s == MemberState::Live))
                .count();
            if live < want {
                under += 1;
            }
            if !e
                .members()
                .iter()
                .any(|&m| state(m).is_none_or(MemberState::serves))
            {
                unavailable += 1;
            }
            false
        });
        PoolStats {
            objects: self.inner.table.len(),
            table_bytes: self.inner.table.approx_bytes(),
            under_replicated: under,
            unavailable,
            repair: self.inner.repair.stats(),
            rejoins: self.inner.rejoins.load(Ordering::Relaxed),
        }
    }

    /// Down members whose server answered again and rejoined the pool so far; cheap, unlike
    /// [`PoolBackend::pool_stats`].
    pub fn rejoins(&self) -> u64 {
        self.inner.rejoins.load(Ordering::Relaxed)
    }

    /// Tries now to take back down member `id` (as the pool does by itself, see
    /// [`PoolConfig::rejoin_after`]): revives its session with its data when its server still
    /// has it (member `id` then serves it, draining, and the server also joins as a new member),
    /// else ends the old session and adds the server as a new, empty member. Returns the member
    /// the server takes new objects as (`id` itself for a revived member whose server serves
    /// under no other member and cannot open a fresh session).
    ///
    /// # Errors
    /// [`PoolError::NoRejoin`] when the member is not down, was drained or removed by the
    /// operator, rejoined already, or its backend cannot renew its session;
    /// [`PoolError::Backend`] when its server does not answer (within
    /// [`PoolConfig::rejoin_after`], at least 1 s); [`PoolError::TooManyMembers`].
    pub fn rejoin_member(&self, id: MemberId) -> Result<MemberId, PoolError> {
        rejoin::rejoin(&self.inner, id)
    }

    /// The state of an erasure-coded pool's data (`None` for the other schemes).
    pub fn coded_stats(&self) -> Option<CodedStats> {
        self.coded().map(coded::Engine::stats)
    }

    /// The coded data path, for an erasure-coded pool.
    pub(crate) fn coded(&self) -> Option<&coded::Engine> {
        self.coded.as_ref().map(|c| &*c.engine)
    }

    /// Runs one repair pass in the calling thread (the background thread runs them on its own)
    /// and returns the objects still short of copies afterwards. Every serving member is asked
    /// for its statistics first, so a server that died since the last heartbeat is known down
    /// and its objects are repaired in this pass (a count of zero means they were). For an erasure-coded pool: one
    /// maintenance pass (seal every unsealed stripe, rebuild, compact), returning the stripes
    /// still degraded or unsealed afterwards.
    pub fn repair_now(&self) -> usize {
        // A member that died since the last heartbeat is found now, not after the pass: its
        // objects count as short of copies and are repaired in this pass.
        self.inner.refresh_members();
        if let Some(c) = self.coded() {
            let left = c.maintain(true);
            // Objects replicated beside the coded ones (small ones, or by their protection).
            repair::pass(&self.inner);
            return left + self.pool_stats().under_replicated;
        }
        repair::pass(&self.inner);
        self.pool_stats().under_replicated
    }
}

impl Drop for PoolBackend {
    fn drop(&mut self) {
        drop(self.coded.take());
        drop(self.watcher.take());
        self.inner.repair.shut_down();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
