//! Checking, and where possible installing, the system tools appfw and its
//! tests use.

use std::process::Command;

use anyhow::{bail, Result};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Is `tool` there: an absolute path must be an executable file (the tests
/// run some tools by path), a bare name must answer `--version` (or `-V`).
fn present(tool: &str) -> bool {
    if tool.starts_with('/') {
        use std::os::unix::fs::PermissionsExt;
        return std::fs::metadata(tool)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    }
    have(tool)
        || Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

/// Installs, with apt-get, the Debian package of every `(tool, package)`
/// whose tool is missing; fails naming what is still missing.
fn ensure(tools: &[(&str, &str)], why: &str) -> Result<()> {
    let missing = |tools: &[(&str, &str)]| -> Vec<(String, String)> {
        tools
            .iter()
            .filter(|(t, _)| !present(t))
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect()
    };
    let first = missing(tools);
    if first.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = first.iter().map(|(_, p)| p.as_str()).collect();
    packages.dedup();
    if is_root() && have("apt-get") {
        eprintln!(
            "xtask: missing {}; installing: apt-get install -y {}",
            first
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            packages.join(" ")
        );
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !install() {
            // A new machine has no package lists yet.
            eprintln!("xtask: apt-get install failed; refreshing the package lists and retrying");
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            install();
        }
    }
    let still = missing(tools);
    if still.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = still.iter().map(|(_, p)| p.as_str()).collect();
    packages.dedup();
    bail!(
        "{why} need {}: install them (apt-get install {})",
        still
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        packages.join(" ")
    )
}

/// iptables/ip6tables: installed with apt-get when missing and possible.
pub fn ensure_iptables(optional: bool) -> Result<()> {
    if optional {
        return Ok(());
    }
    ensure(
        &[("iptables", "iptables"), ("ip6tables", "iptables")],
        "appfw's rules",
    )
}

/// What the integration tests run besides appfw, installed when missing.
pub fn ensure_test_tools() -> Result<()> {
    ensure(
        &[
            ("ip", "iproute2"),
            ("/usr/bin/curl", "curl"),
            ("/usr/bin/python3", "python3"),
            ("/usr/bin/wget", "wget"),
            ("unshare", "util-linux"),
            ("setpriv", "util-linux"),
            ("/usr/bin/ping", "iputils-ping"),
            // Names learned from answers over TCP.
            ("/usr/bin/dig", "bind9-dnsutils"),
            // The service tests: the unit, the man page.
            ("systemd-analyze", "systemd"),
            ("man", "man-db"),
            ("dpkg-deb", "dpkg"),
        ],
        "the integration tests",
    )
}
