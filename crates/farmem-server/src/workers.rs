//! The worker pool: a fixed number of threads that run the requests which may take long (agent
//! operations, shrinks that wait for clients) so that the I/O threads never wait on them.
//!
//! A connection has at most one job here at a time (it reads no further request until the
//! answer is back), so the queue is bounded by the number of connections.
//!
//! **Fair between sessions.** Jobs are queued per owner (the session that sent the request; 0
//! for the server's own housekeeping) and started in round-robin order over the owners that
//! have jobs waiting, so a session with many connections full of agent operations gets the same
//! share of job starts as a session with one. With two workers or more, one owner never holds
//! every worker: a job of another session always finds a worker within the time the shortest
//! running job takes, however many long jobs one session queues.
//!
//! **Copies apart.** Server-to-server copies (`OBJ_PUSH`) wait on another server (up to the
//! copy's I/O timeout when that server is slow or gone), not on this one's CPU, so they run on a
//! small pool of their own ([`Pool::submit_copy`]): however many copies hang, agent operations
//! and shrinks still find a worker.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// A unit of work; it delivers its own answer (to the connection's I/O thread).
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The queue shared by the pool's threads.
pub(crate) struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Where server-to-server copies run (`None`: here).
    copies: Option<Arc<Pool>>,
}

struct Queue {
    /// Waiting jobs per owner; an owner is present only while it has some.
    waiting: HashMap<u64, VecDeque<Job>>,
    /// Owners with waiting jobs, in the order they get their next start.
    turn: VecDeque<u64>,
    /// Jobs running per owner; an owner is present only while it has some.
    running: HashMap<u64, usize>,
    /// Most workers one owner may hold at once.
    per_owner: usize,
    stop: bool,
}

impl Queue {
    /// The next job to start: the first owner in turn below its share of workers.
    fn next(&mut self) -> Option<(u64, Job)> {
        let at = self
            .turn
            .iter()
            .position(|o| self.running.get(o).copied().unwrap_or(0) < self.per_owner)?;
        let owner = self.turn.remove(at)?;
        let jobs = self.waiting.get_mut(&owner)?;
        let job = jobs.pop_front()?;
        if jobs.is_empty() {
            self.waiting.remove(&owner);
        } else {
            self.turn.push_back(owner);
        }
        *self.running.entry(owner).or_insert(0) += 1;
        Some((owner, job))
    }

    fn done(&mut self, owner: u64) {
        if let Some(n) = self.running.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&owner);
            }
        }
    }
}

impl Pool {
    /// Starts `threads` workers, and `copy_threads` more for server-to-server copies.
    pub(crate) fn start_with_copies(
        threads: usize,
        copy_threads: usize,
    ) -> std::io::Result<(Arc<Self>, Vec<JoinHandle<()>>)> {
        let (copies, mut handles) = Self::start_named(copy_threads, "copy", None)?;
        match Self::start_named(threads, "worker", Some(copies.clone())) {
            Ok((pool, h)) => {
                handles.extend(h);
                Ok((pool, handles))
            }
            Err(e) => {
                copies.stop();
                Err(e)
            }
        }
    }

    /// Starts `threads` workers.
    #[cfg(test)]
    pub(crate) fn start(threads: usize) -> std::io::Result<(Arc<Self>, Vec<JoinHandle<()>>)> {
        Self::start_named(threads, "worker", None)
    }

    fn start_named(
        threads: usize,
        name: &str,
        copies: Option<Arc<Pool>>,
    ) -> std::io::Result<(Arc<Self>, Vec<JoinHandle<()>>)> {
        let threads = threads.max(1);
        let pool = Arc::new(Self {
            queue: Mutex::new(Queue {
                waiting: HashMap::new(),
                turn: VecDeque::new(),
                running: HashMap::new(),
                per_owner: (threads - 1).max(1),
                stop: false,
            }),
            ready: Condvar::new(),
            copies,
        });
        let mut handles = Vec::new();
        for i in 0..threads {
            let p = pool.clone();
            let h = std::thread::Builder::new()
                .name(format!("farmem-{name}-{i}"))
                .spawn(move || p.work());
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    pool.stop();
                    return Err(e);
                }
            }
        }
        Ok((pool, handles))
    }

    /// Queues `job` for `owner` (a session's key; 0 for the server's own work); it runs on a
    /// free worker in `owner`'s turn (never, after [`Pool::stop`]).
    pub(crate) fn submit(&self, owner: u64, job: Job) {
        let mut q = self.queue.lock();
        if q.stop {
            return;
        }
        match q.waiting.get_mut(&owner) {
            Some(jobs) => jobs.push_back(job),
            None => {
                q.waiting.insert(owner, VecDeque::from([job]));
                q.turn.push_back(owner);
            }
        }
        drop(q);
        self.ready.notify_one();
    }

    /// Queues a server-to-server copy for `owner` on the copy pool (as [`Pool::submit`]).
    pub(crate) fn submit_copy(&self, owner: u64, job: Job) {
        match &self.copies {
            Some(c) => c.submit(owner, job),
            None => self.submit(owner, job),
        }
    }

    /// Drops the queued jobs and lets the workers exit once their current job is done (the
    /// copy pool's too).
    pub(crate) fn stop(&self) {
        if let Some(c) = &self.copies {
            c.stop();
        }
        let dropped = {
            let mut q = self.queue.lock();
            q.stop = true;
            q.turn.clear();
            std::mem::take(&mut q.waiting)
        };
        drop(dropped);
        self.ready.notify_all();
    }

    fn work(&self) {
        let mut finished = None;
        loop {
            let (owner, job) = {
                let mut q = self.queue.lock();
                if let Some(owner) = finished.take() {
                    q.done(owner);
                }
                loop {
                    if q.stop {
                        return;
                    }
                    if let Some(next) = q.next() {
                        break next;
                    }
                    self.ready.wait(&mut q);
                }
            };
            // A panicking job must not take the worker with it; the job's own guard reports
            // the failure to its connection.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!("a worker job panicked");
            }
            finished = Some(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::Pool;

    #[test]
    fn jobs_run_and_a_panicking_job_leaves_the_pool_working() {
        let (pool, handles) = Pool::start(2).unwrap();
        let (tx, rx) = mpsc::channel();
        pool.submit(1, Box::new(|| panic!("a bug in a job")));
        for i in 0..8 {
            let tx = tx.clone();
            pool.submit(1 + i as u64 % 3, Box::new(move || tx.send(i).unwrap()));
        }
        let mut got: Vec<i32> = (0..8).map(|_| rx.recv().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        pool.stop();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn owners_take_turns() {
        let (pool, handles) = Pool::start(1).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        // Holds the only worker while the others queue.
        pool.submit(9, Box::new(move || gate_rx.recv().unwrap()));
        for (owner, name) in [
            (1, "a1"),
            (1, "a2"),
            (1, "a3"),
            (2, "b1"),
            (3, "c1"),
            (2, "b2"),
        ] {
            let tx = tx.clone();
            pool.submit(owner, Box::new(move || tx.send(name).unwrap()));
        }
        gate_tx.send(()).unwrap();
        let order: Vec<&str> = (0..6).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(order, ["a1", "b1", "c1", "a2", "b2", "a3"]);
        pool.stop();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn one_session_never_holds_every_worker() {
        let (pool, handles) = Pool::start(2).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(parking_lot::Mutex::new(release_rx));
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Session 1 queues long jobs, each running until released.
        for _ in 0..6 {
            let r = release_rx.clone();
            let started = started.clone();
            pool.submit(
                1,
                Box::new(move || {
                    started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    r.lock().recv().unwrap()
                }),
            );
        }
        // Give the workers time to take whatever they may take of session 1's jobs.
        for _ in 0..50 {
            if started.load(std::sync::atomic::Ordering::SeqCst) >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Session 2's job runs while all of session 1's still wait to be released.
        let (tx, rx) = mpsc::channel();
        pool.submit(2, Box::new(move || tx.send(()).unwrap()));
        let served = rx.recv_timeout(Duration::from_secs(30));
        for _ in 0..6 {
            release_tx.send(()).unwrap();
        }
        assert!(
            served.is_ok(),
            "session 2 waited behind session 1's long jobs"
        );
        pool.stop();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn hung_copies_leave_the_workers_free() {
        let (pool, handles) = Pool::start_with_copies(2, 2).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(parking_lot::Mutex::new(release_rx));
        // Two sessions' copies hang (their target does not answer).
        for owner in [1, 2, 3, 4] {
            let r = release_rx.clone();
            pool.submit_copy(owner, Box::new(move || r.lock().recv().unwrap()));
        }
        // A third session's agent operation runs while every copy still hangs.
        let (tx, rx) = mpsc::channel();
        pool.submit(5, Box::new(move || tx.send(()).unwrap()));
        let served = rx.recv_timeout(Duration::from_secs(30));
        for _ in 0..4 {
            release_tx.send(()).unwrap();
        }
        assert!(
            served.is_ok(),
            "an agent operation waited behind hung copies"
        );
        pool.stop();
        for h in handles {
            h.join().unwrap();
        }
    }
}
