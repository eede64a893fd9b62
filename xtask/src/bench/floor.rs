//! The floor: the least a userspace NFQUEUE listener can do, with the same
//! `nfq` crate and queue settings as appfw (whole packets copied, a full
//! queue drops, 16 MB receive buffer):
//! receive, accept, nothing else. appfw's distance to it is appfw's cost.
//!
//! It times receive-to-verdict the way appfw does and prints the summary
//! every second, so the bench can show what the verdict alone costs.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

pub fn run(queue_num: u16) -> Result<()> {
    let mut q = nfq::Queue::open().context("opening NFQUEUE")?;
    q.bind(queue_num)
        .with_context(|| format!("binding queue {queue_num}"))?;
    q.set_copy_range(queue_num, u16::MAX)?;
    q.set_fail_open(queue_num, false)?;
    q.set_queue_max_len(queue_num, 4096)?;
    let bytes: libc::c_int = 16 << 20;
    // SAFETY: the queue's own socket and an int option of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&q),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting the receive buffer");
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut last = Instant::now();
    println!("ready");
    loop {
        let mut msg = match q.recv() {
            Ok(m) => m,
            Err(_) => continue,
        };
        let start = Instant::now();
        msg.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(msg);
        latency.saturating_record((start.elapsed().as_nanos() as u64).max(1));
        if last.elapsed() >= Duration::from_secs(1) {
            print_summary(&latency);
            last = Instant::now();
        }
    }
}

/// "floor latency over N packets: p50 X us, p99 X us, max X us"
fn print_summary(h: &Histogram<u64>) {
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "floor latency over {} packets: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        h.len(),
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.max())
    );
    let _ = out.flush();
}
