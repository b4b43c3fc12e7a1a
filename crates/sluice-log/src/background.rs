//! A small process-wide pool for the logs' background work: the fsync of a
//! sealed segment after a roll and the rewrite of a `recovery-point` after a
//! flush. No roll or flush starts a thread of its own, so the thread count
//! stays bounded however many partitions roll at once.
//!
//! [`WORKERS`] threads take jobs from one queue, oldest first. If no worker
//! can be started (thread limit), a job runs inline on the caller. A panic
//! in a job is caught and logged; it does not take the worker down.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Worker threads in the pool.
pub(crate) const WORKERS: usize = 2;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads the pool has started since the process began (at most [`WORKERS`]).
static STARTED: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();

/// Number of background worker threads started so far in this process;
/// bounded by the pool size, whatever the number of rolls and flushes.
pub fn threads_started() -> usize {
    STARTED.load(Ordering::Relaxed)
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a background storage job panicked");
        }
    }
}

fn pool() -> Option<&'static Mutex<Sender<Job>>> {
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut any = false;
        for i in 0..WORKERS {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-log-bg-{i}"))
                .spawn(move || worker(rx));
            if spawned.is_ok() {
                STARTED.fetch_add(1, Ordering::Relaxed);
                any = true;
            }
        }
        any.then(|| Mutex::new(tx))
    })
    .as_ref()
}

/// Completion of one submitted job.
#[derive(Debug, Clone, Default)]
pub(crate) struct Task {
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Task {
    /// Whether the job has run (or panicked).
    pub(crate) fn is_finished(&self) -> bool {
        *self.done.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until the job has run (or panicked).
    pub(crate) fn wait(&self) {
        let (m, cv) = &*self.done;
        let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
        while !*g {
            g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Marks its task finished when dropped (also when the job panics).
struct Finish(Task);

impl Drop for Finish {
    fn drop(&mut self) {
        let (m, cv) = &*self.0.done;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }
}

/// Runs `job` on the pool (inline if the pool has no thread).
pub(crate) fn spawn(job: impl FnOnce() + Send + 'static) -> Task {
    let task = Task::default();
    let finish = Finish(task.clone());
    let wrapped: Job = Box::new(move || {
        let _finish = finish;
        job();
    });
    let rejected = match pool() {
        Some(tx) => tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(wrapped)
            .err()
            .map(|e| e.0),
        None => Some(wrapped),
    };
    if let Some(job) = rejected {
        job();
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_a_bounded_pool_and_report_completion() {
        let counter = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<Task> = (0..500)
            .map(|_| {
                let c = Arc::clone(&counter);
                spawn(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in &tasks {
            t.wait();
            assert!(t.is_finished());
        }
        assert_eq!(counter.load(Ordering::SeqCst), 500);
        assert!(threads_started() <= WORKERS);
        // A panicking job finishes its task and leaves the pool working.
        let t = spawn(|| panic!("boom"));
        t.wait();
        let c = Arc::clone(&counter);
        spawn(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .wait();
        assert_eq!(counter.load(Ordering::SeqCst), 501);
    }
}
