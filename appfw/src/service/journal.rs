//! Reports into the systemd journal, with fields a query can select on
//! (`journalctl APPFW_VERDICT=drop APPFW_EXE=/usr/bin/curl`). Used when
//! stderr is the journal (systemd sets `JOURNAL_STREAM`); the message text
//! is the report line unchanged, blocks at priority warning.

use std::net::IpAddr;

use log::{kv::Value, Level, Record};
use systemd_journal_logger::JournalLog;

use crate::{
    policy::Verdict,
    report::{proto_name, Event},
    stats::{reason_index, REASON_NAMES},
};

/// True when systemd connected our stderr to the journal.
pub fn under_journal() -> bool {
    systemd_journal_logger::connected_to_journal()
}

pub fn open() -> std::io::Result<JournalLog> {
    Ok(JournalLog::new()?.with_syslog_identifier("appfw".into()))
}

/// Sends one report `line` about `ev`.
pub fn send(journal: &JournalLog, line: &str, ev: &Event) -> std::io::Result<()> {
    let (_, remote) = ev.key.endpoints();
    let daddr: IpAddr = remote.ip();
    let p = ev.process.as_deref();
    let exe = p.and_then(|p| p.exe.as_deref()).unwrap_or("");
    let pid = p.map(|p| p.pid.to_string()).unwrap_or_default();
    let uid = p.map(|p| p.uid.to_string()).unwrap_or_default();
    let (verdict, level) = match ev.decision.verdict {
        Verdict::Accept => ("accept", Level::Info),
        Verdict::Block(crate::config::Action::Drop) => ("drop", Level::Warn),
        Verdict::Block(crate::config::Action::Reject) => ("reject", Level::Warn),
    };
    let daddr = daddr.to_string();
    let dport = remote.port().to_string();
    let host = ev.host.as_deref().unwrap_or("");
    let fields: [(&str, Value); 9] = [
        ("APPFW_EXE", Value::from(exe)),
        ("APPFW_PID", Value::from(pid.as_str())),
        ("APPFW_UID", Value::from(uid.as_str())),
        ("APPFW_VERDICT", Value::from(verdict)),
        (
            "APPFW_REASON",
            Value::from(REASON_NAMES[reason_index(ev.decision.reason)]),
        ),
        ("APPFW_PROTO", Value::from(proto_name(ev.key.proto))),
        ("APPFW_DADDR", Value::from(daddr.as_str())),
        ("APPFW_DPORT", Value::from(dport.as_str())),
        // The destination's name from a DNS answer; empty when unknown.
        ("APPFW_HOST", Value::from(host)),
    ];
    journal.journal_send(
        &Record::builder()
            .args(format_args!("{line}"))
            .level(level)
            .target("appfw")
            .key_values(&fields)
            .build(),
    )
}
