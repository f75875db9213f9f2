//! Tickets: requests submitted without waiting (explicit pipelining).

use std::sync::Arc;
use std::time::Instant;

use super::conn::{Connection, Pending, Reply};
use crate::backend::{BackendError, ObjectId};

/// A request in flight, returned by [`super::TcpBackend::submit_get`] and
/// [`super::TcpBackend::submit_put`]. Wait for it with the matching `wait_*` method; dropping
/// it discards the answer.
#[must_use = "a ticket must be waited for to learn the outcome"]
pub struct Ticket {
    conn: Arc<Connection>,
    pending: Option<Pending>,
    id: ObjectId,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("server", &self.conn.addr())
            .finish()
    }
}

impl Ticket {
    pub(crate) fn new(conn: Arc<Connection>, p: Pending, id: ObjectId) -> Self {
        Self {
            conn,
            pending: Some(p),
            id,
        }
    }

    /// The object this request is about.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    pub(crate) fn wait(self, deadline: Instant) -> Result<Reply, BackendError> {
        self.wait_as(deadline, false)
    }

    /// Waits as a read (`patient`: see `Connection::wait_read`) or as any request.
    pub(crate) fn wait_as(
        mut self,
        deadline: Instant,
        patient: bool,
    ) -> Result<Reply, BackendError> {
        match self.pending.take() {
            Some(p) if patient => self.conn.wait_read(p, deadline),
            Some(p) => self.conn.wait(p, deadline),
            None => Err(BackendError::Protocol(
                crate::backend::ProtocolError::TicketUsed,
            )),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            self.conn.abandon(p);
        }
    }
}
