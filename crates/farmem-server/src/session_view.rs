//! What a client's `STATS` shows: its own session, not the server's other clients.

use farmem_proto::ServerStats;
use farmem_store::Session;

use crate::server::Shared;

/// The answer to session `s`'s `STATS`.
///
/// On a server with an admin token (an operator, and so clients to keep apart) the figures are
/// the session's own: `used_bytes` and `objects` are its own, `capacity_bytes` is its use plus
/// the room it has left (the server's free space, within its byte quota), so `capacity - used`
/// still tells a pool where to place data; other sessions, connections and write traffic read
/// zero (`sessions` 1). Operators see the server-wide figures with an admin `stats` request
/// (`farmem-server ctl stats`) or on the metrics endpoint. A server without an admin token
/// (a trusted network, tests) has no operator to tell apart, and every client sees the
/// server-wide figures.
pub(crate) fn stats(shared: &Shared, s: &Session) -> ServerStats {
    let mut st = shared.stats();
    st.session_used_bytes = s.ns.used_bytes();
    st.session_objects = s.ns.len();
    (st.reclaim_bytes, st.reclaim_deadline_ms) = shared.capacity.reclaim_for(st.session_used_bytes);
    if shared.config.admin_token.is_some() {
        restrict(&mut st, shared.config.quota.bytes);
    }
    st
}

/// Narrows server-wide `st` (with its session fields set) to the session's view.
fn restrict(st: &mut ServerStats, quota_bytes: Option<u64>) {
    let own = st.session_used_bytes;
    let free = st.capacity_bytes.saturating_sub(st.used_bytes);
    let room = quota_bytes.map_or(free, |q| free.min(q.saturating_sub(own)));
    *st = ServerStats {
        used_bytes: own,
        capacity_bytes: own.saturating_add(room),
        objects: st.session_objects,
        bytes_written: 0,
        sessions: 1,
        connections: 0,
        ..*st
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_sees_its_use_and_its_room() {
        let all = ServerStats {
            used_bytes: 700,
            capacity_bytes: 1000,
            objects: 9,
            bytes_written: 5000,
            session_used_bytes: 100,
            session_objects: 2,
            sessions: 4,
            connections: 6,
            ..Default::default()
        };
        let mut st = all;
        restrict(&mut st, None);
        assert_eq!(
            (st.used_bytes, st.capacity_bytes, st.objects),
            (100, 400, 2)
        );
        assert_eq!((st.sessions, st.connections, st.bytes_written), (1, 0, 0));
        let mut st = all;
        restrict(&mut st, Some(250));
        assert_eq!((st.used_bytes, st.capacity_bytes), (100, 250));
    }
}
