//! The kernel's per-queue counters, /proc/net/netfilter/nfnetlink_queue.
//!
//! Plain std code: the daemon reports them, and `cargo xtask bench --soak`
//! (which includes this file by path) checks appfw's books against them.

use std::fmt;

/// The kernel's counters of one NFQUEUE instance, from
/// /proc/net/netfilter/nfnetlink_queue. They start at 0 when appfw binds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelQueue {
    /// Packets waiting for a verdict.
    pub waiting: u64,
    /// Dropped because the queue held its maximum length.
    pub queue_dropped: u64,
    /// Dropped because appfw's receive buffer was full.
    pub user_dropped: u64,
    /// Packets numbered for delivery (delivered + user dropped).
    pub id_sequence: u64,
}

impl KernelQueue {
    pub fn dropped(&self) -> u64 {
        self.queue_dropped + self.user_dropped
    }

    /// Reads queue `num` of the calling thread's network namespace;
    /// `Ok(None)` when nobody is bound to it.
    pub fn read(num: u16) -> std::io::Result<Option<KernelQueue>> {
        let text = std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue")?;
        Ok(Self::parse(&text, num))
    }

    /// Lines of "queue portid waiting copy-mode copy-range queue-dropped
    /// user-dropped id-sequence 1".
    pub fn parse(text: &str, num: u16) -> Option<KernelQueue> {
        text.lines().find_map(|line| {
            let f: Vec<u64> = line
                .split_whitespace()
                .map(|w| w.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() >= 8 && f[0] == u64::from(num)).then(|| KernelQueue {
                waiting: f[2],
                queue_dropped: f[5],
                user_dropped: f[6],
                id_sequence: f[7],
            })
        })
    }
}

impl fmt::Display for KernelQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel queue: delivered {}, dropped {} (queue full {}, receive buffer full {}), waiting {}",
            self.id_sequence - self.user_dropped.min(self.id_sequence),
            self.dropped(),
            self.queue_dropped,
            self.user_dropped,
            self.waiting
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_queue_line_is_parsed_by_queue_number() {
        let text = "    0  12345     0 2 65531     0     0        7  1\n    3   4001    17 2 65531   250    31    90031  1\n";
        assert_eq!(
            KernelQueue::parse(text, 3),
            Some(KernelQueue {
                waiting: 17,
                queue_dropped: 250,
                user_dropped: 31,
                id_sequence: 90031
            })
        );
        assert_eq!(KernelQueue::parse(text, 0).unwrap().id_sequence, 7);
        assert_eq!(KernelQueue::parse(text, 1), None);
        assert_eq!(KernelQueue::parse("garbage\n", 0), None);
    }
}
