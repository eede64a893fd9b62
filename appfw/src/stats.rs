//! Counters and the receive-to-verdict latency histogram of the queue
//! thread. Owned by that thread (no sharing, no locks); handed back when it
//! stops, and summarised periodically with --debug.

use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{
    attribution::{Counts, Source},
    config::Action,
    policy::{Decision, Reason, Verdict},
    talkers::Talkers,
};

/// Label values of [`QueueStats::verdicts`]: the verdict, then the reason.
pub const VERDICT_NAMES: [&str; 3] = ["accept", "drop", "reject"];
pub const REASON_NAMES: [&str; 7] = [
    "monitor",
    "in-whitelist",
    "not-in-whitelist",
    "in-blacklist",
    "not-in-blacklist",
    "unknown",
    "rule",
];

pub struct QueueStats {
    /// Receive-to-verdict time in nanoseconds: until the verdict syscall
    /// returned (which, on accept, carries the packet on through the stack).
    pub latency: Histogram<u64>,
    /// Receive-to-decision time in nanoseconds: appfw's own part (parsing,
    /// attribution, policy), without the verdict syscall.
    pub decision: Histogram<u64>,
    pub counts: Counters,
    /// Flows per executable (see [`crate::talkers`]).
    pub talkers: Talkers,
}

impl Default for QueueStats {
    fn default() -> Self {
        QueueStats {
            // 1 ns .. 60 s at 3 significant digits: allocated once, here.
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("valid histogram bounds"),
            decision: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("valid histogram bounds"),
            counts: Counters::default(),
            talkers: Talkers::default(),
        }
    }
}

/// `r`'s index in [`REASON_NAMES`].
pub fn reason_index(r: Reason) -> usize {
    match r {
        Reason::Monitor => 0,
        Reason::InWhitelist => 1,
        Reason::NotInWhitelist => 2,
        Reason::InBlacklist => 3,
        Reason::NotInBlacklist => 4,
        Reason::Unknown => 5,
        Reason::Rule => 6,
    }
}

/// The queue thread's counters without the histograms: what it publishes
/// about once a second for `appfw status` and /metrics (plain data, copied
/// without allocating). `appfw status --json` shows all but the last two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub accepted: u64,
    pub blocked: u64,
    /// Packets appfw could not read (judged by their socket, else as from
    /// an unknown owner).
    pub unparsed: u64,
    /// Packets whose socket record in front of the queue was overrun.
    pub sender_lost: u64,
    /// Receive buffer overruns (ENOBUFS): the kernel dropped packets.
    pub overruns: u64,
    pub recv_errors: u64,
    pub verdict_errors: u64,
    /// Report events lost because the reporter lagged (verdicts never are).
    pub reports_dropped: u64,
    /// Packets whose judging panicked; they got the unknown-owner verdict.
    pub internal_errors: u64,
    /// Process verdicts stored in the kernel (one per process judged in
    /// the queue; its later flows are decided there).
    pub process_verdicts: u64,
    /// Flows the kernel decided by a process verdict and reported here.
    pub kernel_events: u64,
    #[serde(skip)]
    pub attribution: Counts,
    /// Decisions by verdict and reason (indices of [`VERDICT_NAMES`],
    /// [`REASON_NAMES`]).
    #[serde(skip)]
    pub verdicts: [[u64; 7]; 3],
    /// [`QueueStats::latency`] and [`QueueStats::decision`] in the buckets
    /// of /metrics' histograms.
    #[serde(skip)]
    pub latency: Buckets,
    #[serde(skip)]
    pub decision: Buckets,
}

impl QueueStats {
    /// Counts one decision by verdict and reason (two array indices).
    pub fn count_decision(&mut self, d: &Decision) {
        let v = match d.verdict {
            Verdict::Accept => 0,
            Verdict::Block(Action::Drop) => 1,
            Verdict::Block(Action::Reject) => 2,
        };
        self.counts.verdicts[v][reason_index(d.reason)] += 1;
    }

    pub fn counters(&self) -> Counters {
        self.counts
    }

    /// Records a receive-to-verdict time: in the HDR histogram (the
    /// percentiles of --debug and of the summary at exit) and in /metrics'
    /// buckets (a search of 16 bounds; publishing is then a copy).
    pub fn record_latency(&mut self, ns: u64) {
        let ns = ns.max(1);
        self.latency.saturating_record(ns);
        self.counts.latency.record(ns);
    }

    /// Records a receive-to-decision time, like [`Self::record_latency`].
    pub fn record_decision(&mut self, ns: u64) {
        let ns = ns.max(1);
        self.decision.saturating_record(ns);
        self.counts.decision.record(ns);
    }
}

/// Upper bounds (inclusive) of the histogram buckets in /metrics, in
/// nanoseconds: from a few microseconds (a cache hit) to the /proc
/// deadline and beyond.
pub const BUCKET_BOUNDS_NS: [u64; 16] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// A histogram in [`BUCKET_BOUNDS_NS`] (the last bucket: above them),
/// plain data, so that publishing it is a copy (putting the HDR histogram
/// into buckets instead took milliseconds). Counts per bucket, not
/// cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    pub counts: [u64; BUCKET_BOUNDS_NS.len() + 1],
    pub count: u64,
    /// The sum of the recorded values, in nanoseconds.
    pub sum_ns: u64,
}

impl Buckets {
    fn record(&mut self, ns: u64) {
        self.counts[BUCKET_BOUNDS_NS.partition_point(|&b| b < ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl QueueStats {
    pub fn summary(&self) -> LatencySummary {
        summarize(&self.latency)
    }

    pub fn decision_summary(&self) -> LatencySummary {
        summarize(&self.decision)
    }
}

fn summarize(h: &Histogram<u64>) -> LatencySummary {
    let us = |ns: u64| ns as f64 / 1000.0;
    LatencySummary {
        count: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verdict latency over {} packets: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
            self.count, self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

impl fmt::Display for QueueStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        let d = self.decision_summary();
        writeln!(
            f,
            "decision time (receive to verdict decided, without the verdict syscall): p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            d.p50_us, d.p99_us, d.max_us
        )?;
        write!(
            f,
            "packets {} (accepted {}, blocked {}, not understood {}, socket record overrun {}), receive buffer overruns {}, recv errors {}, verdict errors {}, reports dropped {}, internal errors {}; attribution:",
            self.counts.packets, self.counts.accepted, self.counts.blocked, self.counts.unparsed, self.counts.sender_lost, self.counts.overruns, self.counts.recv_errors, self.counts.verdict_errors, self.counts.reports_dropped, self.counts.internal_errors
        )?;
        for s in Source::ALL {
            write!(f, " {} {}", s.name(), self.counts.attribution.get(s))?;
        }
        write!(f, "; process records missing {}", self.counts.attribution.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_put_in_the_metrics_buckets() {
        let mut s = QueueStats::default();
        // 5 us exactly (the bounds are inclusive), 7 us, 30 ms, 2 s.
        for ns in [5_000, 7_000, 30_000_000, 2_000_000_000] {
            s.record_decision(ns);
        }
        let b = s.counters().decision;
        let mut want = [0; BUCKET_BOUNDS_NS.len() + 1];
        want[0] = 1;
        want[1] = 1;
        want[12] = 1;
        want[BUCKET_BOUNDS_NS.len()] = 1;
        assert_eq!(b.counts, want);
        assert_eq!((b.count, b.sum_ns), (4, 2_030_012_000));
        assert_eq!(s.decision.len(), 4, "the HDR histogram has them too");
        assert_eq!(s.counters().latency, Buckets::default());
    }
}
