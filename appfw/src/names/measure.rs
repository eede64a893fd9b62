//! Unit-level measurements of the verdict path's new work (rule matching,
//! name lookup) and of the name table's memory; run alone, in release:
//!
//! ```text
//! cargo test --release -p appfw --lib measure -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Ignored by default: they take seconds and their figures depend on the
//! machine. Their bounds only catch gross regressions.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use super::Names;
use crate::{
    attribution::Process,
    config::parse_str,
    policy::{Mode, Policy},
    rules::Flow,
};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * rustix::param::page_size()
}

#[test]
#[ignore = "a measurement: run it alone in release (see the module)"]
fn measure_decision_with_1000_rules() {
    // 1,000 rules that look at destinations (none matches the packet),
    // each for the executable of the process judged, and a last rule that
    // matches by name: the worst case, every rule is examined.
    let mut text = String::new();
    for i in 0..1000u32 {
        text.push_str(&format!(
            "[[rule]]\nexe = \"/usr/bin/curl\"\naddr = \"10.{}.{}.0/24\"\nport = {}\nproto = \"tcp\"\naction = \"drop\"\n\n",
            i / 256,
            i % 256,
            1 + i % 1000
        ));
    }
    text.push_str("[[rule]]\nexe = \"/usr/bin/curl\"\nhost = \"*.example\"\naction = \"accept\"\n");
    let mut config = parse_str(&text, "bench.toml").unwrap();
    config.resolve(&crate::config::tests::debian());
    assert_eq!(config.rules.len(), 1001);
    let policy = Policy::new(Mode::Whitelist, &config);
    let curl = Process::example("/usr/bin/curl", &["curl"]);
    let mut names = Names::default();
    let now = Instant::now();
    let daddr: IpAddr = "198.51.100.2".parse().unwrap();
    names.learn(daddr, "test.example", 3600, curl.pid, now);
    for i in 0..10_000u32 {
        names.learn(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            &format!("h{i}.example"),
            3600,
            1,
            now,
        );
    }
    let rounds = 200_000;
    let mut times = Vec::with_capacity(rounds);
    let mut accepted = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let host = names.lookup_own(daddr, curl.pid, t);
        let flow = Flow {
            proto: appfw_common::flow::PROTO_TCP,
            daddr,
            dport: 8080,
            uid: Some(0),
            host: host.map(|h| &**h),
        };
        let d = policy.decide(Some(&curl), &flow);
        times.push(t.elapsed().as_nanos() as u64);
        accepted += usize::from(d.rule.is_some_and(|h| h.index == 1000));
    }
    assert_eq!(accepted, rounds, "the last rule decides every time");
    times.sort_unstable();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    eprintln!("MEASURE decision (name lookup + 1,001 rules, last one matches): p50 {p50} ns, p99 {p99} ns, max {} ns", times[times.len() - 1]);
    assert!(
        Duration::from_nanos(p99) < Duration::from_millis(1),
        "p99 {p99} ns"
    );
}

#[test]
#[ignore = "a measurement: run it alone in release (see the module)"]
fn measure_memory_of_100000_names() {
    let before = rss_bytes();
    let mut names = Names::default();
    let now = Instant::now();
    for i in 0..100_000u32 {
        // Names of a typical length (about 25 bytes), one per address.
        names.learn(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            &format!("host-{i:06}.cdn.example.org"),
            3600,
            i,
            now,
        );
    }
    let after = rss_bytes();
    assert_eq!(names.len(), super::CAPACITY);
    let per = (after - before) as f64 / 100_000.0;
    eprintln!(
        "MEASURE names: 100,000 names (25-byte names, one per IPv4 address): RSS +{:.1} MiB, {per:.0} bytes per name",
        (after - before) as f64 / (1024.0 * 1024.0)
    );
    assert!(after - before < 64 << 20, "{} bytes", after - before);
    let t = Instant::now();
    let mut found = 0;
    for i in 0..100_000u32 {
        found += usize::from(
            names
                .lookup(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), i, now)
                .is_some(),
        );
    }
    eprintln!(
        "MEASURE names: lookup in a full table: {:.0} ns each",
        t.elapsed().as_nanos() as f64 / 100_000.0
    );
    assert_eq!(found, 100_000);
}
