//! The test bed: the namespace pair of [`crate::netns`] with small servers
//! in the server namespace, helpers to run clients and appfw in the client
//! namespace, and cleanup of everything on drop, also when a test fails. It
//! never touches the root namespace's netfilter rules.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    thread,
    time::{Duration, Instant},
};

use appfw_common::{
    flow::{PROTO_TCP, PROTO_UDP},
    FlowKey,
};
use serde::Deserialize;

use crate::netns::Pair;
pub use crate::netns::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};

pub const HTTP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// The sink's TCP and UDP port (see [`Bed::sink`]).
pub const SINK_PORT: u16 = 9000;
/// The unprivileged user that attacks run as (nobody).
pub const ATTACKER_UID: u32 = 65534;

const CLIENT_PY: &str = include_str!("client.py");
const SERVER_PY: &str = include_str!("server.py");
const SINK_PY: &str = include_str!("sink.py");
const DNS_SERVER_PY: &str = include_str!("dns_server.py");

/// Fails the test (does not skip it) when it cannot run here.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test loads eBPF programs and creates network namespaces: it must run as root \
             (sudo -E cargo xtask test)"
        );
    }
}

/// The appfw binary under test.
pub fn appfw_bin() -> &'static str {
    env!("CARGO_BIN_EXE_appfw")
}

/// Debian's python3, not a pyenv shim: a real executable whose path the
/// tests can predict.
pub fn python() -> &'static str {
    for p in ["/usr/bin/python3"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("/usr/bin/python3 is needed by the integration tests (apt-get install python3)");
}

/// What /proc/PID/exe shows for [`python`] (symlinks resolved).
pub fn python_exe() -> String {
    fs::canonicalize(python())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

pub fn curl() -> &'static str {
    if Path::new("/usr/bin/curl").exists() {
        return "/usr/bin/curl";
    }
    panic!("/usr/bin/curl is needed by the integration tests (apt-get install curl)");
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Every loaded appfw records every process on the machine, and the map of
/// exited processes is bounded: a test that floods the machine with
/// short-lived processes would evict the records that other tests, running
/// at the same time, need to name a sender after it exited. Beds hold this
/// shared; the flooding test holds it alone ([`Bed::alone`]).
static MACHINE: RwLock<()> = RwLock::new(());

enum MachineGuard {
    Shared(#[expect(dead_code, reason = "held, never read")] RwLockReadGuard<'static, ()>),
    Alone(#[expect(dead_code, reason = "held, never read")] RwLockWriteGuard<'static, ()>),
    /// A second bed of a test that holds the lock already (taking it again
    /// could deadlock behind a waiting writer).
    Nested,
}

thread_local! {
    static HELD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

pub struct Bed {
    pub client: String,
    pub server: String,
    pub dir: PathBuf,
    children: Vec<Child>,
    /// /etc/netns/CLIENT, made by [`Bed::resolver`]; removed on drop.
    etc_netns: Option<PathBuf>,
    // Dropped after the children: the namespaces go last.
    _pair: Pair,
    _machine: MachineGuard,
}

impl Bed {
    pub fn new() -> Bed {
        if HELD.get() > 0 {
            return Self::with_guard(MachineGuard::Nested);
        }
        let guard = MACHINE.read().unwrap_or_else(|e| e.into_inner());
        HELD.set(HELD.get() + 1);
        Self::with_guard(MachineGuard::Shared(guard))
    }

    /// A bed for a test that no other test may run beside (it floods the
    /// machine with processes).
    pub fn alone() -> Bed {
        assert_eq!(HELD.get(), 0, "Bed::alone must be a test's first bed");
        let guard = MACHINE.write().unwrap_or_else(|e| e.into_inner());
        HELD.set(HELD.get() + 1);
        Self::with_guard(MachineGuard::Alone(guard))
    }

    fn with_guard(guard: MachineGuard) -> Bed {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pair = Pair::new(&n.to_string());
        let dir = std::env::temp_dir().join(format!("appfwt-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Bed {
            client: pair.client.clone(),
            server: pair.server.clone(),
            dir,
            children: Vec::new(),
            etc_netns: None,
            _pair: pair,
            _machine: guard,
        }
    }

    /// Starts the HTTP and UDP servers in the server namespace.
    pub fn serve(&mut self) -> &mut Self {
        let log = self.udp_log();
        let mut child = Pair::exec(&self.server, python())
            .args(["-c", SERVER_PY])
            .arg(&log)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the test servers");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "test servers did not start");
        self.children.push(child);
        self
    }

    /// A UDP listener on port 53 that records DNS query names.
    pub fn serve_dns(&mut self) -> &mut Self {
        let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(2048)
    name, i = [], 12
    while i < len(data) and data[i]:
        name.append(data[i + 1:i + 1 + data[i]].decode(errors="replace")); i += 1 + data[i]
    with open(sys.argv[1], "a") as f:
        f.write(".".join(name) + "\n")
"#;
        let log = self.dir.join("dns.log");
        let mut child = Pair::exec(&self.server, python())
            .args(["-c", script])
            .arg(&log)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the DNS listener");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "DNS listener did not start");
        self.children.push(child);
        self
    }

    /// Starts a DNS server in the server namespace (UDP and TCP port 53)
    /// answering `table`: JSON as dns_server.py reads it. Questions are
    /// recorded as with [`Bed::serve_dns`].
    pub fn serve_names(&mut self, table: &serde_json::Value) -> &mut Self {
        let log = self.dir.join("dns.log");
        let mut child = Pair::exec(&self.server, python())
            .args(["-c", DNS_SERVER_PY])
            .arg(&log)
            .arg(table.to_string())
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the DNS server");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "DNS server did not start");
        self.children.push(child);
        self
    }

    /// Makes the client namespace's programs ask the server namespace's
    /// DNS server: `ip netns exec` bind-mounts /etc/netns/CLIENT/resolv.conf
    /// over /etc/resolv.conf. The directory goes when the bed does.
    pub fn resolver(&mut self) -> &mut Self {
        self.resolver_at(SERVER_V4)
    }

    /// [`Bed::resolver`] with another name server (such as a local stub).
    pub fn resolver_at(&mut self, server: &str) -> &mut Self {
        let etc = PathBuf::from(format!("/etc/netns/{}", self.client));
        fs::create_dir_all(&etc).unwrap();
        self.etc_netns = Some(etc.clone());
        fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {server}\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        self
    }

    /// Starts the sink in the server namespace: every TCP or UDP payload to
    /// [`SINK_PORT`] and every ICMP echo request is recorded (see
    /// [`Bed::sink_received`]).
    pub fn sink(&mut self) -> &mut Self {
        let log = self.dir.join("sink.log");
        let mut child = Pair::exec(&self.server, python())
            .args(["-c", SINK_PY])
            .arg(&log)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the sink");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the sink did not start");
        self.children.push(child);
        self
    }

    /// What reached the sink, one line per payload:
    /// `<proto> <source> <payload repr>`.
    pub fn sink_received(&self) -> String {
        fs::read_to_string(self.dir.join("sink.log")).unwrap_or_default()
    }

    /// Waits up to `timeout` for a sink line containing `marker`.
    pub fn sink_got(&self, marker: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.sink_received().contains(marker) {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A command run in the client namespace as the unprivileged
    /// [`ATTACKER_UID`], with no supplementary groups and no capabilities:
    /// how an attack runs.
    pub fn as_attacker(&self, program: &str) -> Command {
        let mut c = Pair::exec(&self.client, "setpriv");
        c.args([
            &format!("--reuid={ATTACKER_UID}"),
            &format!("--regid={ATTACKER_UID}"),
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            program,
        ]);
        c
    }

    /// A directory the attacker can write (scripts, copies of programs).
    pub fn attacker_dir(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let d = self.dir.join("attacker");
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).unwrap();
        d
    }

    pub fn dns_received(&self) -> String {
        fs::read_to_string(self.dir.join("dns.log")).unwrap_or_default()
    }

    /// Datagrams the UDP server received.
    pub fn udp_log(&self) -> PathBuf {
        self.dir.join("udp.log")
    }

    pub fn udp_received(&self) -> String {
        fs::read_to_string(self.udp_log()).unwrap_or_default()
    }

    /// A command run in the client namespace.
    pub fn in_client(&self, program: &str) -> Command {
        Pair::exec(&self.client, program)
    }

    /// curl GET against the server; returns the output (check `status`).
    pub fn curl(&self, host: &str, timeout_secs: f64) -> Output {
        let url = if host.contains(':') {
            format!("http://[{host}]:{HTTP_PORT}/")
        } else {
            format!("http://{host}:{HTTP_PORT}/")
        };
        self.in_client(curl())
            .args(["-sS", "--max-time", &timeout_secs.to_string(), &url])
            .output()
            .expect("running curl")
    }

    /// python3 fetching the same URL as [`Bed::curl`].
    pub fn python_get(&self, host: &str, timeout_secs: f64) -> Output {
        let url = if host.contains(':') {
            format!("http://[{host}]:{HTTP_PORT}/")
        } else {
            format!("http://{host}:{HTTP_PORT}/")
        };
        let script = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode().strip())";
        self.in_client(python())
            .args(["-c", script, &url, &timeout_secs.to_string()])
            .output()
            .expect("running python3")
    }

    /// Starts the client program in `mode` (see client.py) and waits for
    /// its report.
    pub fn client(&self, mode: &str, host: &str, port: u16) -> Client {
        self.client_from(mode, host, port, None)
    }

    pub fn client_from(&self, mode: &str, host: &str, port: u16, sport: Option<u16>) -> Client {
        let mut cmd = self.in_client(python());
        cmd.args(["-c", CLIENT_PY, mode, host, &port.to_string()]);
        if let Some(s) = sport {
            cmd.arg(s.to_string());
        }
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the test client");
        client_of(mode, child)
    }

    /// Starts the client program now, but it opens its socket only at
    /// [`Waiting::go`]: a process older than what is loaded in between.
    pub fn client_waiting(&self, mode: &str, host: &str, port: u16) -> Waiting {
        let wait_then_run = "import sys\n\
            src = sys.argv.pop(1)\n\
            sys.stdin.readline()\n\
            exec(compile(src, 'client.py', 'exec'))\n";
        let child = self
            .in_client(python())
            .args([
                "-c",
                wait_then_run,
                CLIENT_PY,
                mode,
                host,
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the test client");
        Waiting {
            child: Some(child),
            mode: mode.to_owned(),
        }
    }

    /// Runs `f` on a thread inside the client namespace (setns affects only
    /// the calling thread, so the test's own threads stay where they are).
    pub fn in_client_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.client);
        thread::scope(|s| {
            s.spawn(|| {
                let ns = fs::File::open(&path).unwrap();
                // SAFETY: a valid namespace fd; only this thread moves.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {path}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Keeps a process started in the bed; it is killed on drop.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }
}

/// The client `child` of `mode`, once it reported its socket.
fn client_of(mode: &str, mut child: Child) -> Client {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let report: Report = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("client {mode} reported {line:?}: {e}"));
    let stdin = child.stdin.take();
    Client {
        child,
        stdin,
        report,
    }
}

/// A client started by [`Bed::client_waiting`] that has not opened its
/// socket yet; killed on drop.
pub struct Waiting {
    child: Option<Child>,
    mode: String,
}

impl Waiting {
    /// Lets it open its socket, and waits for its report.
    pub fn go(mut self) -> Client {
        let mut child = self.child.take().unwrap();
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .expect("telling the waiting client to go");
        client_of(&self.mode, child)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if !matches!(self._machine, MachineGuard::Nested) {
            HELD.set(HELD.get().saturating_sub(1));
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The namespaces go with `_pair`, dropped after this.
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(etc) = self.etc_netns.take() {
            let _ = fs::remove_dir_all(&etc);
            // /etc/netns itself, when no other bed has a directory there.
            let _ = fs::remove_dir("/etc/netns");
        }
    }
}

/// What a client reported about its socket.
#[derive(Clone, Debug, Deserialize)]
pub struct Report {
    pub pid: u32,
    pub netns: u64,
    pub proto: String,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    #[serde(default)]
    pub parent: Option<u32>,
}

pub struct Client {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub report: Report,
}

impl Client {
    /// The flow as a packet on the wire shows it: an unbound socket's
    /// source is the client's address.
    pub fn flow_key(&self) -> FlowKey {
        let r = &self.report;
        let proto = if r.proto == "tcp" {
            PROTO_TCP
        } else {
            PROTO_UDP
        };
        let v6 = r.raddr.contains(':');
        let local = match r.laddr.as_str() {
            "0.0.0.0" | "::" if v6 => CLIENT_V6,
            "0.0.0.0" | "::" => CLIENT_V4,
            other => other,
        };
        let ip = |a: &str| -> std::net::IpAddr { a.parse().unwrap() };
        FlowKey::from_endpoints(
            r.netns,
            proto,
            std::net::SocketAddr::new(ip(local), r.lport),
            std::net::SocketAddr::new(ip(&r.raddr), r.rport),
        )
    }

    /// Lets the client end (closing its stdin) and waits for it; a client
    /// of an "-exit" mode has ended already.
    pub fn finish(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits until `f` returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a configuration file only root can write (appfw refuses others).
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("appfw.toml");
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// appfw running in a bed's client namespace, as `ip netns exec NS appfw`.
pub struct Daemon {
    pub child: Option<Child>,
    pub pid: u32,
    pub stderr: PathBuf,
    pub stdout: PathBuf,
    pub trace: PathBuf,
}

impl Daemon {
    /// Starts appfw with `args`, a trace file and, if given, a
    /// configuration; waits until it reports that it runs.
    pub fn start(bed: &Bed, args: &[&str], config: Option<&str>) -> Daemon {
        Self::start_with_env(bed, args, config, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with_env(
        bed: &Bed,
        args: &[&str],
        config: Option<&str>,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        Self::start_under(bed, &[], args, config, env)
    }

    /// [`Daemon::start_with_env`] with appfw run by `wrapper` (a command
    /// that ends by exec'ing its arguments, so the pid stays appfw's).
    pub fn start_under(
        bed: &Bed,
        wrapper: &[&str],
        args: &[&str],
        config: Option<&str>,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let stderr = bed.dir.join(format!("appfw-{n}.err"));
        let stdout = bed.dir.join(format!("appfw-{n}.out"));
        let trace = bed.dir.join(format!("appfw-{n}.trace"));
        let mut cmd = match wrapper.split_first() {
            None => bed.in_client(appfw_bin()),
            Some((first, rest)) => {
                let mut c = bed.in_client(first);
                c.args(rest).arg(appfw_bin());
                c
            }
        };
        cmd.args(args).arg("-t").arg(&trace);
        // `cargo xtask test` runs the verdict suites a second time so.
        if std::env::var_os("APPFW_TEST_KERNEL_VERDICTS").is_some_and(|v| v == "off")
            && !args.contains(&"--no-kernel-verdicts")
        {
            cmd.arg("--no-kernel-verdicts");
        }
        cmd.envs(env.iter().copied());
        if let Some(text) = config {
            let path = write_config(&bed.dir, text);
            cmd.arg("-c").arg(path);
        }
        let child = cmd
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting appfw");
        let pid = child.id();
        let mut d = Daemon {
            child: Some(child),
            pid,
            stderr,
            stdout,
            trace,
        };
        wait_for(Duration::from_secs(20), "appfw to start", || {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("appfw exited during start ({status}): {}", d.stderr_text());
            }
            d.stderr_text().contains("running: mode").then_some(())
        });
        d
    }

    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn trace_text(&self) -> String {
        fs::read_to_string(&self.trace).unwrap_or_default()
    }

    /// Waits until the trace file has a line containing every one of `parts`.
    pub fn wait_trace_line(&self, parts: &[&str]) -> String {
        wait_for(
            Duration::from_secs(5),
            &format!("a trace line with {parts:?}"),
            || {
                self.trace_text()
                    .lines()
                    .find(|l| parts.iter().all(|p| l.contains(p)))
                    .map(str::to_owned)
            },
        )
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: our own child's pid.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) };
    }

    /// SIGTERM, then waits for the exit; returns stderr.
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "appfw did not exit within 10 s of SIGTERM: {}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "appfw exited with {status}: {}",
            self.stderr_text()
        );
        self.stderr_text()
    }

    /// SIGKILL: what a crash leaves behind.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `iptables -S` (or ip6tables) in a namespace.
pub fn rules_in(ns: &str, v6: bool) -> String {
    let tool = if v6 { "ip6tables" } else { "iptables" };
    let out = Command::new("ip")
        .args(["netns", "exec", ns, tool, "-w", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
