//! Reads that a user can stall, run off the queue thread with a deadline.
//!
//! A process can make reads of its own /proc files block (a read of
//! /proc/PID/cmdline waits for the target's mmap lock, which a FUSE- or
//! userfaultfd-backed page fault can hold indefinitely). The queue thread
//! must never wait on that: it hands the read to a worker thread and waits
//! for the answer only until a deadline; a late answer counts as none.
//!
//! A worker stuck in a read stays busy until the read returns; the next job
//! goes to an idle worker or a new one, up to a fixed number per pool.
//! When every worker is stuck, jobs fail at once, so later packets are not
//! stalled either.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

type Job = Box<dyn FnOnce() + Send>;

struct Worker {
    jobs: mpsc::Sender<Job>,
    busy: Arc<AtomicBool>,
}

/// A small pool of worker threads for one kind of read.
pub struct Pool {
    name: &'static str,
    workers: Vec<Worker>,
    max_workers: usize,
    /// Jobs that missed their deadline or found every worker stuck.
    pub late: u64,
}

impl Pool {
    pub const fn new(name: &'static str, max_workers: usize) -> Pool {
        Pool {
            name,
            workers: Vec::new(),
            max_workers,
            late: 0,
        }
    }

    /// Runs `f` on a worker; its result if it comes within `deadline`.
    pub fn run<T: Send + 'static>(
        &mut self,
        deadline: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let Some(i) = self.idle_worker() else {
            self.missed("every worker is still stuck in an earlier read");
            return None;
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let busy = self.workers[i].busy.clone();
        busy.store(true, Ordering::SeqCst);
        let job: Job = Box::new(move || {
            // A panicking read is no answer, and leaves the worker usable.
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
            busy.store(false, Ordering::SeqCst);
            // The queue thread may have stopped waiting: then nobody wants it.
            let _ = tx.send(answer);
        });
        if self.workers[i].jobs.send(job).is_err() {
            // The thread is gone: replace it next time.
            self.workers.swap_remove(i);
            self.missed("a worker thread ended");
            return None;
        }
        match rx.recv_timeout(deadline) {
            Ok(answer) => answer,
            Err(_) => {
                self.missed("the read missed its deadline");
                None
            }
        }
    }

    fn missed(&mut self, why: &str) {
        self.late += 1;
        if self.late.is_power_of_two() {
            log::warn!(
                "{}: answered as unknown, {why} ({} times so far); a process may be stalling reads of its /proc files",
                self.name,
                self.late
            );
        }
    }

    fn idle_worker(&mut self) -> Option<usize> {
        if let Some(i) = self
            .workers
            .iter()
            .position(|w| !w.busy.load(Ordering::SeqCst))
        {
            return Some(i);
        }
        if self.workers.len() >= self.max_workers {
            return None;
        }
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("appfw-proc".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()?;
        self.workers.push(Worker {
            jobs: tx,
            busy: Arc::new(AtomicBool::new(false)),
        });
        Some(self.workers.len() - 1)
    }
}

/// [`Pool::run`] on a thread's own pool (each thread that attributes has
/// its pools; no lock).
pub fn run<T: Send + 'static>(
    pool: &'static std::thread::LocalKey<std::cell::RefCell<Pool>>,
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    pool.with(|p| p.borrow_mut().run(deadline, f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn fast_reads_answer() {
        let mut pool = Pool::new("test", 2);
        for i in 0..100 {
            assert_eq!(pool.run(Duration::from_secs(5), move || i * 2), Some(i * 2));
        }
        assert_eq!(pool.workers.len(), 1, "an idle worker is reused");
        assert_eq!(pool.late, 0);
    }

    #[test]
    fn a_stuck_reader_costs_one_deadline_and_does_not_stall_later_reads() {
        let mut pool = Pool::new("test", 2);
        let (release, stuck) = mpsc::channel::<()>();
        // A fake slow reader: blocks until the test releases it.
        let start = Instant::now();
        let got = pool.run(Duration::from_millis(50), move || {
            let _ = stuck.recv();
            "late"
        });
        let waited = start.elapsed();
        assert_eq!(got, None, "a late answer is unknown");
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        // The next read goes to another worker and answers at once.
        let start = Instant::now();
        assert_eq!(pool.run(Duration::from_secs(5), || "fresh"), Some("fresh"));
        assert!(start.elapsed() < Duration::from_secs(1));
        // Every worker stuck: reads fail at once instead of waiting.
        let (release2, stuck2) = mpsc::channel::<()>();
        assert_eq!(
            pool.run(Duration::from_millis(50), move || {
                let _ = stuck2.recv();
            }),
            None
        );
        let start = Instant::now();
        assert_eq!(pool.run(Duration::from_secs(5), || 1), None);
        assert!(
            start.elapsed() < Duration::from_millis(20),
            "with every worker stuck a read must not wait: {:?}",
            start.elapsed()
        );
        assert_eq!(pool.late, 3);
        // Once a stuck read returns, its worker serves again.
        drop(release);
        drop(release2);
        let answered = (0..100).find_map(|_| {
            thread::sleep(Duration::from_millis(10));
            pool.run(Duration::from_secs(5), || 7)
        });
        assert_eq!(answered, Some(7));
        assert_eq!(pool.workers.len(), 2, "the pool stays bounded");
    }

    #[test]
    fn a_panicking_read_is_no_answer_and_the_worker_survives() {
        let mut pool = Pool::new("test", 1);
        assert_eq!(
            pool.run(Duration::from_secs(5), || -> u8 { panic!("bad read") }),
            None
        );
        assert_eq!(pool.run(Duration::from_secs(5), || 3), Some(3));
    }
}
