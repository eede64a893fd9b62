//! The bench's own traffic: a server, a load generator and short-lived
//! senders. Run as hidden `xtask` subcommands inside the bench namespaces.
//!
//! A TCP "flow" is connect, a 4-byte request, the server's reply and
//! close; a UDP flow is a datagram from a fresh socket (so a fresh source
//! port and conntrack entry) and its echo. Both count only when the reply
//! arrives, so dropped or slow verdicts show in the rate.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
}

const REQUEST: &[u8] = b"req\n";
const REPLY: &[u8] = b"ok\n";
const TIMEOUT: Duration = Duration::from_secs(2);

/// TCP and UDP servers; runs until killed.
pub fn serve(tcp: SocketAddr, udp: SocketAddr, threads: usize) -> Result<()> {
    let listener = TcpListener::bind(tcp).with_context(|| format!("binding {tcp}"))?;
    let socket = UdpSocket::bind(udp).with_context(|| format!("binding {udp}"))?;
    for _ in 0..threads {
        let l = listener.try_clone()?;
        thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut buf = [0u8; 16];
                let _ = s.set_read_timeout(Some(TIMEOUT));
                let _ = s.read(&mut buf);
                let _ = s.write_all(REPLY);
            }
        });
        let u = socket.try_clone()?;
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&buf[..n], from);
            }
        });
    }
    println!("ready");
    loop {
        thread::park();
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoadResult {
    pub flows: u64,
    pub errors: u64,
    pub secs: f64,
}

/// Opens flows against `target` from `concurrency` threads for `duration`.
pub fn load(
    proto: Proto,
    target: SocketAddr,
    concurrency: usize,
    duration: Duration,
) -> Result<()> {
    let flows = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (flows, errors) = (flows.clone(), errors.clone());
            thread::spawn(move || {
                while Instant::now() < deadline {
                    let ok = match proto {
                        Proto::Tcp => tcp_flow(target).is_ok(),
                        Proto::Udp => udp_flow(target).is_ok(),
                    };
                    if ok {
                        flows.fetch_add(1, Ordering::Relaxed);
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
    let result = LoadResult {
        flows: flows.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The source port for flow `i`: ports in turn over the ephemeral range, so
/// that a port comes back only after its conntrack entry (1 s in the bench
/// namespace) has expired and every flow is new to conntrack.
pub fn soak_port(i: u64) -> u16 {
    1024 + (i % (65536 - 1024)) as u16
}

/// Opens `total` UDP flows against `target` from `concurrency` threads,
/// each from the next source port (hidden `bench-count`, the soak's closed
/// loop).
pub fn count(proto: Proto, target: SocketAddr, concurrency: usize, total: u64) -> Result<()> {
    let flows = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (flows, errors, next) = (flows.clone(), errors.clone(), next.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let ok = match proto {
                    Proto::Tcp => tcp_flow(target).is_ok(),
                    Proto::Udp => udp_flow_from(target, soak_port(i)).is_ok(),
                };
                let counter = if ok { &flows } else { &errors };
                counter.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let result = LoadResult {
        flows: flows.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

fn tcp_flow(target: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&target, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.write_all(REQUEST)?;
    // Read to the server's FIN: the server closes first, so the client's
    // ports do not pile up in TIME_WAIT (which would slow every connect).
    let mut reply = Vec::with_capacity(16);
    s.read_to_end(&mut reply)?;
    if reply != REPLY {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn udp_flow_from(target: SocketAddr, port: u16) -> std::io::Result<()> {
    let s = UdpSocket::bind(SocketAddr::new([0, 0, 0, 0].into(), port))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.send_to(REQUEST, target)?;
    let mut buf = [0u8; 16];
    s.recv_from(&mut buf)?;
    Ok(())
}

fn udp_flow(target: SocketAddr) -> std::io::Result<()> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.send_to(REQUEST, target)?;
    let mut buf = [0u8; 16];
    s.recv_from(&mut buf)?;
    Ok(())
}

/// One flow, then exit at once, without waiting for a reply: the process
/// may be gone before its packet is judged.
pub fn once(proto: Proto, target: SocketAddr) -> Result<()> {
    match proto {
        Proto::Tcp => {
            TcpStream::connect_timeout(&target, TIMEOUT)?;
        }
        Proto::Udp => {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.send_to(REQUEST, target)?;
        }
    }
    Ok(())
}

/// Starts `count` processes of [`once`] (a few at a time) and prints their
/// pids as JSON.
pub fn spawn(count: usize, proto: Proto, target: SocketAddr) -> Result<()> {
    let exe = std::env::current_exe()?;
    let proto_arg = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let mut pids = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(4) {
        let mut children = Vec::new();
        for _ in 0..4.min(count - chunk * 4) {
            let c = Command::new(&exe)
                .args(["bench-once", proto_arg, &target.to_string()])
                .spawn()?;
            pids.push(c.id());
            children.push(c);
        }
        for mut c in children {
            c.wait()?;
        }
    }
    println!("{}", serde_json::to_string(&pids)?);
    Ok(())
}
