//! Membership that follows the servers: a DNS answer that gains or loses addresses adds or
//! drains and removes members, and a killed server restarted at its address is re-admitted and
//! repair restores full redundancy onto it.

mod membership_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farmem::Backend;
use farmem::backend::pool::{MemberState, Resolver};
use farmem::backend::{MemberId, MemberSource, PoolBackend};
use membership_support::{Srv, pool, used, value, verify, wait_until};

const LEN: usize = 2048;

/// A resolver whose answer the test sets.
#[derive(Debug, Default)]
struct FakeDns(Mutex<Vec<SocketAddr>>);

impl FakeDns {
    fn answer(&self, servers: &[&Srv]) {
        *self.0.lock().unwrap() = servers.iter().map(|s| s.addr.parse().unwrap()).collect();
    }
}

impl Resolver for FakeDns {
    fn resolve(&self, name: &str) -> std::io::Result<Vec<SocketAddr>> {
        assert_eq!(name, "memsrv.test.svc:7070");
        Ok(self.0.lock().unwrap().clone())
    }
}

/// The member serving `addr` in `state`, if any.
fn member(pool: &PoolBackend, addr: &str, state: MemberState) -> Option<MemberId> {
    pool.members()
        .into_iter()
        .find(|m| m.name.ends_with(addr) && m.state == state)
        .map(|m| m.id)
}

#[test]
fn dns_answers_add_and_remove_members() {
    let s: Vec<Srv> = (0..3).map(|_| Srv::start("dns", "64MiB", &[])).collect();
    let dns = Arc::new(FakeDns::default());
    dns.answer(&[&s[0], &s[1]]);
    let source = MemberSource::Dns {
        name: "memsrv.test.svc:7070".into(),
        resolver: dns.clone(),
        every: Duration::from_millis(50),
    };
    let pool = pool(source, 2);
    assert_eq!(pool.members().len(), 2);
    let n = 1000u64;
    for id in 0..n {
        pool.put(id, &value(id, 0, LEN)).unwrap();
    }

    // A third address joins.
    dns.answer(&[&s[0], &s[1], &s[2]]);
    wait_until(10, "the new address to join", || {
        member(&pool, &s[2].addr, MemberState::Live).is_some()
    });
    let c = member(&pool, &s[2].addr, MemberState::Live).unwrap();
    for id in n..2 * n {
        pool.put(id, &value(id, 0, LEN)).unwrap();
    }
    assert!(
        pool.members()[c.0].objects > 0,
        "new objects go to the new member"
    );

    // The first address leaves: its objects move away, then it is removed.
    dns.answer(&[&s[1], &s[2]]);
    wait_until(20, "the old address to be drained and removed", || {
        member(&pool, &s[0].addr, MemberState::Removed).is_some()
    });
    let a = member(&pool, &s[0].addr, MemberState::Removed).unwrap();
    assert_eq!(pool.members()[a.0].objects, 0);
    assert_eq!(used(&s[0]), 0, "the drained server holds nothing of ours");
    verify(&pool, &vec![0; 2 * n as usize], LEN);
    assert_eq!(pool.pool_stats().under_replicated, 0);

    // A failed or empty answer changes nothing.
    dns.answer(&[]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(member(&pool, &s[1].addr, MemberState::Live).is_some());
    assert!(member(&pool, &s[2].addr, MemberState::Live).is_some());
}

#[test]
fn a_killed_server_restarted_at_its_address_is_readmitted_and_repaired_onto() {
    // Two servers, two copies: after a death no object can be repaired until the server is back.
    let mut s: Vec<Srv> = (0..2)
        .map(|_| Srv::start("readmit", "64MiB", &[]))
        .collect();
    let addrs = s.iter().map(|x| x.addr.clone()).collect();
    let pool = pool(MemberSource::Static(addrs), 2);
    let n = 1000u64;
    for id in 0..n {
        pool.put(id, &value(id, 0, LEN)).unwrap();
    }
    s[1].kill();
    // Reads keep working from the survivor; the failure is noticed.
    wait_until(15, "the killed server to be marked down", || {
        verify(&pool, &vec![0; n as usize], LEN);
        member(&pool, &s[1].addr, MemberState::Down).is_some()
    });
    assert_eq!(pool.pool_stats().under_replicated, n as usize);
    // Writes while it is down go to the survivor.
    for id in 0..n / 2 {
        pool.put(id, &value(id, 1, LEN)).unwrap();
    }
    s[1].restart();
    wait_until(20, "the restarted server to be re-admitted", || {
        member(&pool, &s[1].addr, MemberState::Live).is_some()
    });
    let back = member(&pool, &s[1].addr, MemberState::Live).unwrap();
    assert!(back.0 >= 2, "a new member: {back:?}");
    wait_until(20, "repair to restore full redundancy", || {
        pool.pool_stats().under_replicated == 0
    });
    for id in 0..n {
        assert!(pool.locations(id).unwrap().contains(&back), "object {id}");
    }
    let versions: Vec<u64> = (0..n).map(|id| u64::from(id < n / 2)).collect();
    verify(&pool, &versions, LEN);
    // The re-admitted server really holds the copies: with the other one gone, all is there.
    s[0].kill();
    wait_until(15, "the other server to be marked down", || {
        member(&pool, &s[0].addr, MemberState::Down).is_some() || {
            verify(&pool, &versions, LEN);
            false
        }
    });
    verify(&pool, &versions, LEN);
}
