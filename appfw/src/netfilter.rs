//! appfw's netfilter rules: a chain of its own, hooked into OUTPUT, for
//! IPv4 and IPv6, in the network namespace appfw runs in.
//!
//! ```text
//! -A OUTPUT ! -o lo -j APPFW
//! -A APPFW -p tcp -m mark --mark 0x61707066 -j REJECT --reject-with tcp-reset
//! -A APPFW -m mark --mark 0x61707066 -j REJECT --reject-with icmp-port-unreachable
//! -A APPFW -m bpf --object-pinned DIR/appfw_sk_accept -j ACCEPT
//! -A APPFW -m bpf --object-pinned DIR/appfw_sk_drop -j DROP
//! -A APPFW -p tcp -m bpf --object-pinned DIR/appfw_sk_reject -j REJECT --reject-with tcp-reset
//! -A APPFW -m bpf --object-pinned DIR/appfw_sk_reject -j REJECT --reject-with icmp-port-unreachable
//! -A APPFW -m conntrack --ctdir REPLY -m connmark --mark 0x10000000/0x10000000 -j ACCEPT
//! -A APPFW -m bpf --object-pinned DIR/appfw_sk_kernel -m conntrack ! --ctstate NEW -j ACCEPT
//! -A APPFW -m bpf --object-pinned DIR/appfw_sk_queue -j NFQUEUE --queue-num N --queue-bypass
//!
//! -t mangle -A PREROUTING ! -i lo -j APPFW
//! -t mangle -A APPFW -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x10000000/0x10000000
//! ```
//!
//! Every packet is judged for its own socket: a socket appfw has judged
//! has its packets decided by the socket filters (`verdicts.rs`), any
//! protocol, any conntrack state, so a second socket on a tuple conntrack
//! already knows is judged too. Everything else goes to the queue, except
//! replies of connections that came in from outside (marked as they arrive
//! on an interface other than lo: a local program cannot fake one by
//! sending to itself from a remote address) and what the kernel sends of
//! its own accord on flows it already has: packets without a socket, and
//! TCP segments without payload and ICMP other than echo requests from a
//! socket that is no program's appfw knows (the TCP control socket's
//! resets and TIME_WAIT acks, ICMP errors, neighbour discovery). A closed
//! program socket still sending is judged. The filter in front of the
//! queue records which socket sent the packet.
//! A packet appfw rejects without a socket verdict comes back from the
//! queue with [`REJECT_MARK`] and verdict "repeat".
//!
//! The chain is written with `iptables-restore --noflush` in one
//! transaction: a leftover chain is replaced with no moment without rules.
//! No shell is involved and nothing a user typed reaches the command line
//! (the queue number is a parsed u16, the pin paths appfw's own).

use std::{io, process::Command};

use appfw_common::maps::filters as names;
use thiserror::Error;

use crate::bpf::Filters;

/// The chain appfw owns, in the filter table.
pub const CHAIN: &str = "APPFW";
/// Mark of packets to reject ("appf").
pub const REJECT_MARK: u32 = 0x6170_7066;
/// Connection mark bit of connections that came in from outside.
pub const INBOUND_CONNMARK: u32 = 0x1000_0000;

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
    #[error("the bpf filesystem path {path} has characters iptables-restore cannot take; mount bpffs elsewhere")]
    BadPinPath { path: String },
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

    fn restore_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
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
    /// IPv6 is skipped only on a host without IPv6; failing to install it
    /// otherwise is an error, since IPv6 would then pass unjudged.
    pub fn install(queue_num: u16, bypass: bool, filters: &Filters) -> Result<Rules, RulesError> {
        let mut installed = Rules {
            families: Vec::new(),
        };
        for family in [Family::V4, Family::V6] {
            if family == Family::V6 && !host_has_ipv6() {
                log::warn!(
                    "this host has no IPv6 (no /proc/net/if_inet6): only IPv4 rules installed"
                );
                continue;
            }
            install_family(family, queue_num, bypass, filters)?;
            installed.families.push(family);
        }
        Ok(installed)
    }

    /// Whether the IPv4 and the IPv6 chain are installed.
    pub fn families(&self) -> (bool, bool) {
        (
            self.families.contains(&Family::V4),
            self.families.contains(&Family::V6),
        )
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

fn host_has_ipv6() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
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

/// The chain's rules, in `iptables-restore` syntax.
fn chain_rules(family: Family, queue_num: u16, bypass: bool, filters: &Filters) -> Vec<String> {
    let mark = format!("{REJECT_MARK:#x}");
    let inbound = format!("{INBOUND_CONNMARK:#x}");
    let icmp = family.icmp_reject();
    let pin = |name: &str| filters.path(name).display().to_string();
    let mut queue = format!(
        "-m bpf --object-pinned {} -j NFQUEUE --queue-num {queue_num}",
        pin(names::QUEUE)
    );
    if bypass {
        queue.push_str(" --queue-bypass");
    }
    [
        format!("-p tcp -m mark --mark {mark} -j REJECT --reject-with tcp-reset"),
        format!("-m mark --mark {mark} -j REJECT --reject-with {icmp}"),
        format!("-m bpf --object-pinned {} -j ACCEPT", pin(names::ACCEPT)),
        format!("-m bpf --object-pinned {} -j DROP", pin(names::DROP)),
        format!(
            "-p tcp -m bpf --object-pinned {} -j REJECT --reject-with tcp-reset",
            pin(names::REJECT)
        ),
        format!(
            "-m bpf --object-pinned {} -j REJECT --reject-with {icmp}",
            pin(names::REJECT)
        ),
        format!("-m conntrack --ctdir REPLY -m connmark --mark {inbound}/{inbound} -j ACCEPT"),
        format!(
            "-m bpf --object-pinned {} -m conntrack ! --ctstate NEW -j ACCEPT",
            pin(names::KERNEL)
        ),
        queue,
    ]
    .into_iter()
    .map(|r| format!("-A {CHAIN} {r}"))
    .collect()
}

const JUMP: [&str; 5] = ["!", "-o", "lo", "-j", CHAIN];
const IN_JUMP: [&str; 5] = ["!", "-i", "lo", "-j", CHAIN];

fn install_family(
    family: Family,
    queue_num: u16,
    bypass: bool,
    filters: &Filters,
) -> Result<(), RulesError> {
    if filters
        .dir
        .to_str()
        .is_none_or(|d| d.chars().any(|c| c.is_whitespace() || c == '"'))
    {
        return Err(RulesError::BadPinPath {
            path: filters.dir.display().to_string(),
        });
    }
    // Declaring a chain flushes a leftover one in the same transaction;
    // a jump is added only if it is not there yet. Inbound connections are
    // marked before the filter rules can see their replies.
    let inbound = format!("{INBOUND_CONNMARK:#x}");
    let mut text = format!(
        "*mangle\n:{CHAIN} - [0:0]\n-A {CHAIN} -m conntrack --ctstate NEW -j CONNMARK --set-xmark {inbound}/{inbound}\n"
    );
    let mut check = vec!["-w", "-t", "mangle", "-C", "PREROUTING"];
    check.extend_from_slice(&IN_JUMP);
    if run(family, &check).is_err() {
        text.push_str(&format!("-I PREROUTING 1 {}\n", IN_JUMP.join(" ")));
    }
    text.push_str(&format!("COMMIT\n*filter\n:{CHAIN} - [0:0]\n"));
    for rule in chain_rules(family, queue_num, bypass, filters) {
        text.push_str(&rule);
        text.push('\n');
    }
    let mut check = vec!["-w", "-C", "OUTPUT"];
    check.extend_from_slice(&JUMP);
    if run(family, &check).is_err() {
        text.push_str(&format!("-I OUTPUT 1 {}\n", JUMP.join(" ")));
    }
    text.push_str("COMMIT\n");
    restore(family, &text)
}

/// `iptables-restore --noflush` with `text` on its standard input.
fn restore(family: Family, text: &str) -> Result<(), RulesError> {
    use std::io::Write;
    let tool = family.restore_tool();
    let mut child = Command::new(tool)
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                RulesError::Missing { tool }
            } else {
                RulesError::Spawn { tool, source }
            }
        })?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(text.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|source| RulesError::Spawn { tool, source })?;
    if let Some(Err(source)) = written {
        return Err(RulesError::Spawn { tool, source });
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(RulesError::Failed {
            tool,
            args: format!("--noflush <<< {}", text.replace('\n', "; ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Removes every jump to the chain and the chain itself; absent is fine.
fn remove_family(family: Family) -> Result<(), RulesError> {
    // Each -D removes one jump; a crashed run may have left several.
    for (table, hook, jump) in [
        ("filter", "OUTPUT", JUMP),
        ("mangle", "PREROUTING", IN_JUMP),
    ] {
        let mut delete = vec!["-w", "-t", table, "-D", hook];
        delete.extend_from_slice(&jump);
        while run(family, &delete).is_ok() {}
        if run(family, &["-w", "-t", table, "-n", "-L", CHAIN]).is_ok() {
            run(family, &["-w", "-t", table, "-F", CHAIN])?;
            run(family, &["-w", "-t", table, "-X", CHAIN])?;
        }
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
