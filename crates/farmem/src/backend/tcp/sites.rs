//! Several memory servers without replication as [`Sites`]: each object on its owner
//! ([`farmem_proto::owner_of`]); objects an agent operation wrote on another server are moved to
//! their owner.

use farmem_proto::{Op, body, owner_of};

use super::{Reply, TcpBackend, unexpected};
use crate::backend::{Backend, BackendError, ObjectId, Sites};

impl TcpBackend {
    /// An id owned by server `site` (a compute's route picks its server).
    fn route_to(&self, site: usize) -> ObjectId {
        (0..)
            .find(|&r| owner_of(r, self.servers.len()) == site)
            .unwrap_or(0)
    }
}

impl Sites for TcpBackend {
    fn site_count(&self) -> usize {
        self.servers.len()
    }

    fn serving(&self) -> usize {
        (0..self.servers.len())
            .filter(|&s| !self.is_down(s))
            .count()
    }

    fn holders(&self, ids: &[ObjectId]) -> Vec<Vec<usize>> {
        ids.iter()
            .map(|&id| {
                let s = self.server_of(id);
                if self.is_down(s) { Vec::new() } else { vec![s] }
            })
            .collect()
    }

    fn compute_at(&self, site: usize, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        if site >= self.servers.len() {
            return Err(BackendError::Config(format!("no server {site}")));
        }
        self.compute(self.route_to(site), op, args)
    }

    fn site_failed(&self, site: usize, _err: &BackendError) -> bool {
        // Without copies there is nowhere else to go: a down server's objects are gone.
        self.is_down(site)
    }

    fn adopt(&self, site: usize, objects: &[(ObjectId, usize)]) -> Result<(), BackendError> {
        for &(id, _) in objects {
            if self.server_of(id) == site {
                continue;
            }
            let conn = self.conn(site);
            let data = match self.call(conn, Op::Get, |b| b.extend_from_slice(&id.to_le_bytes()))? {
                Reply::Data(d) => d,
                other => return Err(unexpected(&other)),
            };
            self.put(id, &data)?;
            self.call(conn, Op::Free, |b| body::ids(b, &[id]))?;
        }
        Ok(())
    }
}
