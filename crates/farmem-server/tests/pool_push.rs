//! Server-to-server copies (`OBJ_PUSH`): a server copies a client's objects straight into the
//! client's session on another server; a client can push only its own objects and only into a
//! session whose resume secret it holds; a pool's drain and repair over real servers use them
//! and lose nothing.

use std::sync::Arc;

use farmem::Backend;
use farmem::backend::pool::MemberState;
use farmem::backend::{
    BackendError, MemberId, PoolBackend, PoolConfig, PushTarget, Redundancy, TcpBackend, TcpConfig,
};
use farmem_proto::agent::{AgentMessage, PushArgs, PushResult, op};
use farmem_server::{Server, ServerConfig, ServerHandle};
use farmem_store::agent::AgentErrorCode;

fn server(token: Option<&[u8]>) -> ServerHandle {
    Server::start(ServerConfig {
        token: token.map(<[u8]>::to_vec),
        ..Default::default()
    })
    .unwrap()
}

fn client(s: &ServerHandle, token: &[u8]) -> TcpBackend {
    TcpBackend::connect(TcpConfig::new([s.addr().to_string()]).token(token)).unwrap()
}

fn value(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i) as u8).collect()
}

/// Asks `from`'s server to push `ids` to `to`.
fn push(from: &TcpBackend, to: &PushTarget, ids: &[u64]) -> Result<Vec<u32>, BackendError> {
    let args = PushArgs {
        addr: to.addr.clone(),
        session: to.session,
        resume: to.resume,
        token: to.token.clone(),
        ids: ids.to_vec(),
    };
    let out = from.compute(ids[0], op::OBJ_PUSH, &args.encode())?;
    Ok(PushResult::decode(&out).unwrap().sizes)
}

#[test]
fn a_push_copies_objects_into_the_clients_session_on_another_server() {
    let (a, b) = (server(Some(b"t")), server(Some(b"t")));
    let (ca, cb) = (client(&a, b"t"), client(&b, b"t"));
    // Sizes across slab classes and large objects, and enough bytes for several frames.
    let lens = [0usize, 1, 100, 4096, 8 << 10, 3 << 20, 2 << 20];
    let ids: Vec<u64> = (1..=lens.len() as u64).collect();
    for (&id, &len) in ids.iter().zip(&lens) {
        ca.put(id, &value(id, len)).unwrap();
    }
    cb.put(99, b"before").unwrap(); // opens cb's session
    let to = cb
        .push_target()
        .expect("a single TCP server has a push target");
    assert!(!format!("{to:?}").contains(&to.resume.to_string()));
    let mut asked = ids.clone();
    asked.push(1000); // not on a
    let sizes = push(&ca, &to, &asked).unwrap();
    let mut want: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
    want.push(PushResult::MISSING);
    assert_eq!(sizes, want);
    for (&id, &len) in ids.iter().zip(&lens) {
        assert_eq!(cb.get(id).unwrap(), value(id, len), "object {id} on b");
        assert_eq!(
            ca.get(id).unwrap(),
            value(id, len),
            "object {id} still on a"
        );
    }
    assert!(cb.get(1000).is_err());
    assert_eq!(cb.get(99).unwrap(), b"before");
}

#[test]
fn a_client_cannot_push_another_sessions_objects_or_into_another_session() {
    let (a, b) = (server(None), server(None));
    let (victim_a, victim_b) = (client(&a, b""), client(&b, b""));
    let (thief_a, thief_b) = (client(&a, b""), client(&b, b""));
    victim_a.put(1, b"victim's").unwrap();
    victim_b.put(2, b"victim's on b").unwrap();
    thief_a.put(3, b"thief's").unwrap();
    thief_b.put(4, b"thief's on b").unwrap();
    // The thief names the victim's object: the source reads the thief's own session only.
    let thief_to = thief_b.push_target().unwrap();
    assert_eq!(
        push(&thief_a, &thief_to, &[1]).unwrap(),
        [PushResult::MISSING]
    );
    assert!(
        thief_b.get(1).is_err(),
        "nothing of the victim's reached the thief"
    );
    // The thief writes into the victim's session on b without its resume secret: refused.
    let victim_to = victim_b.push_target().unwrap();
    for resume in [0, thief_to.resume, victim_to.resume ^ 1] {
        let forged = PushTarget {
            resume,
            ..victim_to.clone()
        };
        // The target refuses to join the session: a typed refusal, relayed by the source.
        match push(&thief_a, &forged, &[3]) {
            Err(BackendError::RemoteAgent { code, message, .. }) => {
                assert_eq!(code, AgentErrorCode::Invalid, "resume {resume:x}");
                assert!(message.contains("refused"), "resume {resume:x}: {message}");
            }
            other => panic!("resume {resume:x}: forged push not refused: {other:?}"),
        }
    }
    assert!(
        victim_b.get(3).is_err(),
        "nothing reached the victim's session"
    );
    assert_eq!(victim_b.get(2).unwrap(), b"victim's on b");
}

#[test]
fn a_push_with_the_wrong_token_or_to_no_server_fails_and_writes_nothing() {
    let (a, b) = (server(None), server(Some(b"right")));
    let (ca, cb) = (client(&a, b""), client(&b, b"right"));
    ca.put(1, b"x").unwrap();
    cb.put(2, b"y").unwrap();
    let to = cb.push_target().unwrap();
    let wrong = PushTarget {
        token: b"wrong".to_vec(),
        ..to.clone()
    };
    assert!(push(&ca, &wrong, &[1]).is_err());
    let nowhere = PushTarget {
        addr: "127.0.0.1:1".into(),
        ..to.clone()
    };
    assert!(push(&ca, &nowhere, &[1]).is_err());
    assert!(cb.get(1).is_err());
    // The connection that asked still works.
    assert_eq!(push(&ca, &to, &[1]).unwrap(), [1]);
    assert_eq!(cb.get(1).unwrap(), b"x");
}

/// A pool of three servers, two copies of 600 objects (1 KiB to 40 KiB).
fn pool_of_three(server_to_server: bool) -> (Vec<ServerHandle>, Vec<Arc<TcpBackend>>, PoolBackend) {
    let servers: Vec<ServerHandle> = (0..3).map(|_| server(None)).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| Arc::new(client(s, b""))).collect();
    let list = members
        .iter()
        .map(|m| m.clone() as Arc<dyn Backend>)
        .collect();
    let cfg = PoolConfig::new(Redundancy::replicas(2)).server_to_server(server_to_server);
    let pool = PoolBackend::new(list, cfg).unwrap();
    for id in 0..600u64 {
        pool.put(id, &value(id, 1024 + (id as usize % 40) * 1000))
            .unwrap();
    }
    (servers, members, pool)
}

#[test]
fn a_drain_over_servers_copies_server_to_server_and_loses_nothing() {
    for s2s in [true, false] {
        let (_servers, members, pool) = pool_of_three(s2s);
        let held = members[1].stats().unwrap().objects;
        assert!(held > 0);
        pool.drain_member(MemberId(1)).unwrap();
        assert_eq!(
            members[1].stats().unwrap().objects,
            0,
            "server-to-server {s2s}"
        );
        let r = pool.repair_stats();
        assert_eq!(r.copies, held, "server-to-server {s2s}");
        let (mut on0, mut on2) = (0, 0);
        for id in 0..600u64 {
            let want = value(id, 1024 + (id as usize % 40) * 1000);
            assert_eq!(pool.get(id).unwrap(), want, "object {id}");
            on0 += u64::from(members[0].get(id).is_ok_and(|d| d == want));
            on2 += u64::from(members[2].get(id).is_ok_and(|d| d == want));
        }
        assert_eq!(
            on0 + on2,
            1200,
            "two copies of every object on the two others"
        );
    }
}

#[test]
fn a_repair_after_a_server_loss_restores_two_copies_server_to_server() {
    let (mut servers, members, pool) = pool_of_three(true);
    servers.remove(2).shutdown();
    // The pool notices on its next write to the member, then repairs.
    for id in 0..600u64 {
        pool.get(id).unwrap();
        pool.put(id, &value(id, 1024 + (id as usize % 40) * 1000))
            .unwrap();
    }
    let t = std::time::Instant::now();
    while pool.member_state(MemberId(2)) == Some(MemberState::Live)
        || pool.pool_stats().under_replicated > 0
    {
        assert!(t.elapsed().as_secs() < 60, "repair did not finish");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for id in 0..600u64 {
        let want = value(id, 1024 + (id as usize % 40) * 1000);
        assert_eq!(members[0].get(id).unwrap(), want, "object {id} on 0");
        assert_eq!(members[1].get(id).unwrap(), want, "object {id} on 1");
    }
}
