//! The worker pool: a fixed number of threads that run the requests which may take long (agent
//! operations, shrinks that wait for clients) so that the I/O threads never wait on them.
//!
//! A connection has at most one job here at a time (it reads no further request until the
//! answer is back), so the queue is bounded by the number of connections.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// A unit of work; it delivers its own answer (to the connection's I/O thread).
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The queue shared by the pool's threads.
pub(crate) struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
}

struct Queue {
    jobs: VecDeque<Job>,
    stop: bool,
}

impl Pool {
    /// Starts `threads` workers.
    pub(crate) fn start(threads: usize) -> std::io::Result<(Arc<Self>, Vec<JoinHandle<()>>)> {
        let pool = Arc::new(Self {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                stop: false,
            }),
            ready: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let p = pool.clone();
            let h = std::thread::Builder::new()
                .name(format!("farmem-worker-{i}"))
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

    /// Queues `job`; it runs on the next free worker (never, after [`Pool::stop`]).
    pub(crate) fn submit(&self, job: Job) {
        let mut q = self.queue.lock();
        if q.stop {
            return;
        }
        q.jobs.push_back(job);
        drop(q);
        self.ready.notify_one();
    }

    /// Drops the queued jobs and lets the workers exit once their current job is done.
    pub(crate) fn stop(&self) {
        let dropped = {
            let mut q = self.queue.lock();
            q.stop = true;
            std::mem::take(&mut q.jobs)
        };
        drop(dropped);
        self.ready.notify_all();
    }

    fn work(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock();
                loop {
                    if q.stop {
                        return;
                    }
                    if let Some(j) = q.jobs.pop_front() {
                        break j;
                    }
                    self.ready.wait(&mut q);
                }
            };
            // A panicking job must not take the worker with it; the job's own guard reports
            // the failure to its connection.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                tracing::error!("a worker job panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::Pool;

    #[test]
    fn jobs_run_and_a_panicking_job_leaves_the_pool_working() {
        let (pool, handles) = Pool::start(2).unwrap();
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(|| panic!("a bug in a job")));
        for i in 0..8 {
            let tx = tx.clone();
            pool.submit(Box::new(move || tx.send(i).unwrap()));
        }
        let mut got: Vec<i32> = (0..8).map(|_| rx.recv().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        pool.stop();
        for h in handles {
            h.join().unwrap();
        }
    }
}
