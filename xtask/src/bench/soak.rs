//! `cargo xtask bench --soak`: a million UDP flows through appfw, then the
//! books are checked. Every packet the kernel delivered must have been
//! received and judged exactly once, and what the kernel dropped (queue
//! full, receive buffer full) must be what appfw reported.
//!
//! Two phases: closed-loop flows (each waits for its echo, so the queue
//! rarely overflows), then an open-loop burst from fresh sockets that
//! overflows it on purpose.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{load::LoadResult, netns, Bench};

// The daemon's own parser of the kernel's queue counters.
#[path = "../../../appfw/src/kernel_queue.rs"]
#[expect(dead_code, reason = "the bench uses only the parser")]
mod kernel_queue;
use kernel_queue::KernelQueue;

/// What appfw printed at exit and while running.
#[derive(Debug, Default)]
struct AppfwBooks {
    packets: u64,
    accepted: u64,
    blocked: u64,
    verdict_errors: u64,
    overruns: u64,
    /// Sum of the "N packets dropped: queue full" reports.
    reported_drops: u64,
    /// Its own reading of the kernel's counters at exit.
    kernel_line: String,
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl AppfwBooks {
    fn parse(stderr: &str) -> Result<AppfwBooks> {
        let line = stderr
            .lines()
            .find(|l| l.contains("packets ") && l.contains("verdict errors"))
            .context("appfw printed no packet counts at exit")?;
        let get = |key: &str| {
            number_after(line, key).with_context(|| format!("no `{key}` in appfw's line: {line}"))
        };
        Ok(AppfwBooks {
            packets: get("packets ")?,
            accepted: get("accepted ")?,
            blocked: get("blocked ")?,
            verdict_errors: get("verdict errors ")?,
            overruns: get("receive buffer overruns ")?,
            reported_drops: stderr
                .lines()
                .filter(|l| l.contains(" packets dropped: queue full"))
                .filter_map(|l| {
                    let from = l.find(|c: char| c.is_ascii_digit())?;
                    number_after(&l[from..], "")
                })
                .sum(),
            kernel_line: stderr
                .lines()
                .find(|l| l.contains("kernel queue: "))
                .unwrap_or("")
                .trim()
                .to_owned(),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BurstResult {
    pub sent: u64,
    pub errors: u64,
    pub secs: f64,
}

/// Sends `count` datagrams, each from a fresh socket on the next source
/// port, from `threads` threads, without waiting for replies (hidden
/// `bench-burst`).
pub fn burst(target: SocketAddr, count: u64, threads: usize, offset: u64) -> Result<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (sent, errors, next) = (sent.clone(), errors.clone(), next.clone());
            thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    // Ports continue where the closed loop stopped.
                    let port = super::load::soak_port(offset + i);
                    let ok = UdpSocket::bind(SocketAddr::new([0, 0, 0, 0].into(), port))
                        .and_then(|s| s.send_to(b"soak", target))
                        .is_ok();
                    if ok {
                        sent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let r = BurstResult {
        sent: sent.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

impl Bench {
    fn kernel_queue(&self) -> Result<KernelQueue> {
        let out = netns::Pair::exec(&self.pair.client, "cat")
            .arg("/proc/net/netfilter/nfnetlink_queue")
            .output()
            .context("reading nfnetlink_queue")?;
        let text = String::from_utf8_lossy(&out.stdout);
        KernelQueue::parse(&text, super::QUEUE.parse().expect("number"))
            .with_context(|| format!("queue {} not in nfnetlink_queue: {text:?}", super::QUEUE))
    }

    pub(super) fn soak(&self, flows: u64) -> Result<()> {
        // Every flow through the queue: its books are what is checked.
        let d = self.start_appfw(&["-b", "--no-kernel-verdicts"], &self.blacklist)?;
        let closed = flows - flows / 10;
        let concurrency = 16;
        eprintln!("xtask: soak: {closed} closed-loop UDP flows ({concurrency} at a time)");
        let start = Instant::now();
        let mut looped = LoadResult {
            flows: 0,
            errors: 0,
            secs: 0.0,
        };
        // In slices of 100,000, so that progress shows.
        while looped.flows + looped.errors < closed {
            let out = self
                .in_client(&self.xtask)
                .args(["bench-count", "udp", super::UDP_TARGET])
                .args(["--concurrency", &concurrency.to_string()])
                .args([
                    "--flows",
                    &(closed - looped.flows - looped.errors)
                        .min(100_000)
                        .to_string(),
                ])
                .output()
                .context("running the closed-loop generator")?;
            if !out.status.success() {
                bail!(
                    "load generator failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let r: LoadResult = serde_json::from_slice(&out.stdout)?;
            looped.flows += r.flows;
            looped.errors += r.errors;
            looped.secs += r.secs;
            eprintln!(
                "xtask: soak: {} flows answered, {} unanswered, {:.0} s",
                looped.flows,
                looped.errors,
                start.elapsed().as_secs_f64()
            );
        }
        let burst_count = flows - closed;
        eprintln!("xtask: soak: burst of {burst_count} datagrams from fresh sockets, no waiting");
        let out = self
            .in_client(&self.xtask)
            .args(["bench-burst", super::UDP_TARGET])
            .args(["--count", &burst_count.to_string(), "--threads", "4"])
            .args(["--offset", &closed.to_string()])
            .output()
            .context("running the burst")?;
        if !out.status.success() {
            bail!("burst failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let burst: BurstResult = serde_json::from_slice(&out.stdout)?;
        // Let appfw drain the queue and report the last drops (it checks the
        // kernel's counters once a second).
        let mut kernel = self.kernel_queue()?;
        for _ in 0..100 {
            if kernel.waiting == 0 {
                break;
            }
            thread::sleep(std::time::Duration::from_millis(100));
            kernel = self.kernel_queue()?;
        }
        thread::sleep(std::time::Duration::from_millis(2500));
        let kernel = self.kernel_queue()?;
        let stderr = d.stop()?;
        let books = AppfwBooks::parse(&stderr)?;
        let delivered = kernel.id_sequence - kernel.user_dropped;
        let dropped = kernel.queue_dropped + kernel.user_dropped;
        let mut problems = Vec::new();
        if books.packets != delivered {
            problems.push(format!(
                "appfw received {} packets, the kernel delivered {delivered}",
                books.packets
            ));
        }
        if books.accepted + books.blocked != books.packets || books.verdict_errors != 0 {
            problems.push(format!(
                "verdicts: {} accepted + {} blocked for {} packets, {} verdict errors",
                books.accepted, books.blocked, books.packets, books.verdict_errors
            ));
        }
        if books.reported_drops != dropped {
            problems.push(format!(
                "appfw reported {} dropped packets, the kernel counted {dropped}",
                books.reported_drops
            ));
        }
        if kernel.waiting != 0 {
            problems.push(format!(
                "{} packets still waiting in the queue",
                kernel.waiting
            ));
        }
        let text = format!(
            "## Soak ({flows} UDP flows, appfw --blacklist with 1,000 entries)\n\n\
             - closed loop: {} flows answered, {} unanswered, in {:.1} s ({:.0} flows/s)\n\
             - burst: {} datagrams sent ({} send errors) in {:.2} s ({:.0}/s)\n\
             - kernel (nfnetlink_queue): {} packets numbered, {delivered} delivered, {} dropped over the queue length, {} over the receive buffer, {} waiting at the end\n\
             - appfw: {} packets received, {} accepted, {} blocked, {} verdict errors, {} receive buffer overruns (ENOBUFS), {} drops reported\n\
             - appfw's own exit reading: {}\n\
             - books: {}\n",
            looped.flows,
            looped.errors,
            looped.secs,
            looped.flows as f64 / looped.secs.max(1e-9),
            burst.sent,
            burst.errors,
            burst.secs,
            burst.sent as f64 / burst.secs.max(1e-9),
            kernel.id_sequence,
            kernel.queue_dropped,
            kernel.user_dropped,
            kernel.waiting,
            books.packets,
            books.accepted,
            books.blocked,
            books.verdict_errors,
            books.overruns,
            books.reported_drops,
            books.kernel_line,
            if problems.is_empty() {
                "balanced: every delivered packet got one verdict, every drop was reported".to_owned()
            } else {
                problems.join("; ")
            },
        );
        let path = self.dir.join("soak.md");
        std::fs::write(&path, &text)?;
        println!("{text}");
        eprintln!("xtask: soak report written to {}", path.display());
        if !problems.is_empty() {
            bail!("soak: the books do not balance: {}", problems.join("; "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appfw_books_are_read_from_its_output() {
        let stderr = "appfw: 12 packets dropped: queue full (12 in all since start: 12 over the queue length, 0 over the receive buffer). Programs ...\n\
                      appfw: 30 packets dropped: queue full (42 in all since start: 40 over the queue length, 2 over the receive buffer). Programs ...\n\
                      packets 1000 (accepted 990, blocked 10, not understood 0), receive buffer overruns 1, recv errors 0, verdict errors 0, reports dropped 0, internal errors 0; attribution: ebpf 1\n\
                      kernel queue: delivered 1000, dropped 42 (queue full 40, receive buffer full 2), waiting 0\n";
        let b = AppfwBooks::parse(stderr).unwrap();
        assert_eq!(
            (
                b.packets,
                b.accepted,
                b.blocked,
                b.verdict_errors,
                b.overruns,
                b.reported_drops
            ),
            (1000, 990, 10, 0, 1, 42)
        );
        assert!(b.kernel_line.starts_with("kernel queue: delivered 1000"));
        let q =
            KernelQueue::parse("    0   4021     3 2 65531    40     2     1002  1\n", 0).unwrap();
        assert_eq!(
            (q.waiting, q.queue_dropped, q.user_dropped, q.id_sequence),
            (3, 40, 2, 1002)
        );
    }
}
