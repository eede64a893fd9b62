//! Two network namespaces, "client" and "server", joined by a veth pair on
//! documentation addresses; removed on drop, also when a test panics.
//!
//! Plain std code: the integration tests and `cargo xtask bench` both use
//! it (xtask includes this file by path), so the bench measures the same
//! network the tests check.
//!
//! ```text
//!  client: eth0 198.51.100.1/24 2001:db8::1/64 ==veth== eth0 198.51.100.2/24 2001:db8::2/64 :server
//! ```

use std::{path::Path, process::Command};

pub const CLIENT_V4: &str = "198.51.100.1";
pub const SERVER_V4: &str = "198.51.100.2";
pub const CLIENT_V6: &str = "2001:db8::1";
pub const SERVER_V6: &str = "2001:db8::2";

/// Namespace names start with this, then the creating pid.
pub const PREFIX: &str = "appfwt-";

pub struct Pair {
    pub client: String,
    pub server: String,
}

/// Runs `ip ARGS`, panicking with its error output when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    /// Creates `appfwt-<pid>-<tag>-c` and `-s`.
    pub fn new(tag: &str) -> Pair {
        remove_stale();
        let base = format!("{PREFIX}{}-{tag}", std::process::id());
        let pair = Pair {
            client: format!("{base}-c"),
            server: format!("{base}-s"),
        };
        ip(&["netns", "add", &pair.client]);
        ip(&["netns", "add", &pair.server]);
        // Created inside the namespaces: no interface ever appears in the
        // root namespace.
        ip(&[
            "-n",
            &pair.client,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pair.server,
        ]);
        for (ns, v4, v6) in [
            (&pair.client, CLIENT_V4, CLIENT_V6),
            (&pair.server, SERVER_V4, SERVER_V6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        pair
    }

    /// A command run inside namespace `ns` (`ip netns exec`).
    pub fn exec(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.server])
            .output();
    }
}

/// Removes namespaces that earlier runs left behind when they were killed:
/// only those whose creating process no longer exists.
pub fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
