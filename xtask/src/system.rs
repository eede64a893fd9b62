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

/// iptables/ip6tables: installed with apt-get when missing and possible.
pub fn ensure_iptables(optional: bool) -> Result<()> {
    if have("iptables") && have("ip6tables") {
        return Ok(());
    }
    if optional {
        return Ok(());
    }
    if is_root() && have("apt-get") {
        eprintln!("xtask: iptables is missing; installing it: apt-get install -y iptables");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-q", "iptables"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("xtask: apt-get install failed; refreshing the package lists and retrying");
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-q", "iptables"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
        }
        if have("iptables") && have("ip6tables") {
            return Ok(());
        }
    }
    bail!("iptables and ip6tables are needed (appfw installs its rules with them): install the iptables package (apt-get install iptables / dnf install iptables)")
}

/// What the integration tests run besides appfw.
pub fn check_test_tools() -> Result<()> {
    let mut missing = Vec::new();
    if !Command::new("ip")
        .args(["-V"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        missing.push("ip (iproute2)");
    }
    for tool in ["curl", "python3"] {
        if !have(tool) {
            missing.push(tool);
        }
    }
    if !missing.is_empty() {
        bail!(
            "the integration tests need {}; install them (apt-get install iproute2 curl python3)",
            missing.join(", ")
        );
    }
    Ok(())
}
