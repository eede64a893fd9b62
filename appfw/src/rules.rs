//! appfw's netfilter rules: a chain of its own, hooked into OUTPUT, for
//! IPv4 and IPv6, in the network namespace appfw runs in.
//!
//! ```text
//! -A OUTPUT ! -o lo -j APPFW
//! -A APPFW -m mark --mark 0x61707066 -p tcp -j REJECT --reject-with tcp-reset
//! -A APPFW -m mark --mark 0x61707066 -j REJECT --reject-with icmp-port-unreachable
//! -A APPFW -p tcp -m conntrack --ctstate NEW -j NFQUEUE --queue-num N --queue-bypass
//! -A APPFW -p udp -m conntrack --ctstate NEW -j NFQUEUE --queue-num N --queue-bypass
//! ```
//!
//! Only the first packet of a connection (conntrack NEW) is queued; packets
//! of accepted connections, and RELATED ones (ICMP errors, helper data
//! connections), stay in the kernel. A rejected packet comes back from the
//! queue with [`REJECT_MARK`] and verdict "repeat", and the mark rules turn
//! it into a TCP reset or ICMP error so the program fails at once.
//!
//! iptables runs without a shell, with fixed arguments: nothing a user
//! typed is put on its command line (the queue number is a parsed u16).

use std::{io, process::Command};

use thiserror::Error;

/// The chain appfw owns, in the filter table.
pub const CHAIN: &str = "APPFW";
/// Mark of packets to reject ("appf").
pub const REJECT_MARK: u32 = 0x6170_7066;

#[derive(Debug, Error)]
pub enum RulesError {
    #[error("{tool} not found: install iptables (apt-get install iptables / dnf install iptables) or run with --no-rules and add the rules yourself (README: Rules)")]
    Missing { tool: &'static str },
    #[error("running {tool} failed: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("`{tool} {args}` failed: {stderr}")]
    Failed {
        tool: &'static str,
        args: String,
        stderr: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn icmp_reject(self) -> &'static str {
        match self {
            Family::V4 => "icmp-port-unreachable",
            Family::V6 => "icmp6-port-unreachable",
        }
    }
}

/// Checks that iptables can be run (before anything is loaded).
pub fn check_tools() -> Result<(), RulesError> {
    run(Family::V4, &["--version"]).map(|_| ())
}

/// Installed rules; removed on drop (normal exit, error, panic unwinding).
/// After SIGKILL they stay, and the next start replaces them.
pub struct Rules {
    families: Vec<Family>,
}

impl Rules {
    /// Installs the chain for both families, replacing any leftover one.
    pub fn install(queue_num: u16, bypass: bool) -> Result<Rules, RulesError> {
        let mut installed = Rules {
            families: Vec::new(),
        };
        for family in [Family::V4, Family::V6] {
            match install_family(family, queue_num, bypass) {
                Ok(()) => installed.families.push(family),
                // A kernel without IPv6 still gets its IPv4 rules.
                Err(e) if family == Family::V6 => log::warn!("IPv6 rules not installed: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(installed)
    }

    pub fn remove(mut self) -> Result<(), RulesError> {
        let families = std::mem::take(&mut self.families);
        families.into_iter().try_for_each(remove_family)
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        for family in std::mem::take(&mut self.families) {
            if let Err(e) = remove_family(family) {
                log::error!("removing appfw's rules failed: {e}");
            }
        }
    }
}

/// Removes appfw's rules for both families (`appfw --remove-rules`);
/// returns whether there were any.
pub fn remove_leftovers() -> Result<bool, RulesError> {
    let existed = chain_exists(false) || chain_exists(true);
    remove_family(Family::V4)?;
    if let Err(e) = remove_family(Family::V6) {
        log::warn!("IPv6 rules: {e}");
    }
    Ok(existed)
}

/// Whether appfw's chain exists in this namespace (for tests and status).
pub fn chain_exists(ipv6: bool) -> bool {
    let family = if ipv6 { Family::V6 } else { Family::V4 };
    run(family, &["-w", "-n", "-L", CHAIN]).is_ok()
}

fn install_family(family: Family, queue_num: u16, bypass: bool) -> Result<(), RulesError> {
    remove_family(family)?;
    let queue = queue_num.to_string();
    let mark = format!("{REJECT_MARK:#x}");
    run(family, &["-w", "-N", CHAIN])?;
    let append = |rule: &[&str]| {
        let mut args = vec!["-w", "-A", CHAIN];
        args.extend_from_slice(rule);
        run(family, &args)
    };
    append(&[
        "-m",
        "mark",
        "--mark",
        &mark,
        "-p",
        "tcp",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ])?;
    append(&[
        "-m",
        "mark",
        "--mark",
        &mark,
        "-j",
        "REJECT",
        "--reject-with",
        family.icmp_reject(),
    ])?;
    for proto in ["tcp", "udp"] {
        let mut rule = vec![
            "-p",
            proto,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ];
        if bypass {
            rule.push("--queue-bypass");
        }
        append(&rule)?;
    }
    run(
        family,
        &["-w", "-I", "OUTPUT", "1", "!", "-o", "lo", "-j", CHAIN],
    )?;
    Ok(())
}

/// Removes every jump to the chain and the chain itself; absent is fine.
fn remove_family(family: Family) -> Result<(), RulesError> {
    // Each -D removes one jump; a crashed run may have left several.
    while run(
        family,
        &["-w", "-D", "OUTPUT", "!", "-o", "lo", "-j", CHAIN],
    )
    .is_ok()
    {}
    if run(family, &["-w", "-n", "-L", CHAIN]).is_ok() {
        run(family, &["-w", "-F", CHAIN])?;
        run(family, &["-w", "-X", CHAIN])?;
    }
    Ok(())
}

fn run(family: Family, args: &[&str]) -> Result<String, RulesError> {
    let tool = family.tool();
    let out = Command::new(tool).args(args).output().map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            RulesError::Missing { tool }
        } else {
            RulesError::Spawn { tool, source }
        }
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RulesError::Failed {
            tool,
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
