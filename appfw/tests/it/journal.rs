//! Under systemd (stderr is the journal), reports reach the journal with
//! structured fields. The journal is a socket the test reads: in a private
//! mount namespace a tmpfs over /run holds /run/systemd/journal/socket, a
//! link to it, so the machine's /run is not touched.

use std::{
    collections::HashMap,
    os::unix::{fs::MetadataExt, net::UnixDatagram},
    process::{Command, Stdio},
    time::Duration,
};

use crate::testbed::*;

/// The journal's native protocol: `KEY=value\n`, or for any value
/// `KEY\n`, its length (u64, little-endian), the bytes, `\n`.
fn fields(mut d: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    while let Some(end) = d.iter().position(|&b| b == b'=' || b == b'\n') {
        let key = String::from_utf8_lossy(&d[..end]).into_owned();
        let value;
        if d[end] == b'=' {
            let nl = d[end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(d.len(), |i| end + i);
            value = &d[end + 1..nl];
            d = &d[(nl + 1).min(d.len())..];
        } else {
            let len = u64::from_le_bytes(d[end + 1..end + 9].try_into().unwrap()) as usize;
            value = &d[end + 9..end + 9 + len];
            d = &d[(end + 10 + len).min(d.len())..];
        }
        out.insert(key, String::from_utf8_lossy(value).into_owned());
    }
    out
}

#[test]
fn blocks_reach_the_journal_with_fields_at_warning() {
    let mut bed = Bed::new();
    bed.serve();
    let cfg = write_config(&bed.dir, "[global]\nblacklist = [\"/usr/bin/curl\"]\n");
    let sock_path = bed.dir.join("journal.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd tells a service its stderr is the journal by naming the
    // stream's device and inode in JOURNAL_STREAM.
    let stderr_path = bed.dir.join("journal.err");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && ln -s {} /run/systemd/journal/socket && exec {} -b -c {}",
        sock_path.display(),
        appfw_bin(),
        cfg.display()
    );
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", bed.client))
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    // nsenter, unshare and sh exec: the pid is appfw's.
    let pid = child.id();
    bed.adopt(child);

    let mut started = false;
    let block = wait_for(Duration::from_secs(20), "the DROP in the journal", || {
        let _ = bed.curl(SERVER_V4, 1.0);
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            let f = fields(&buf[..n]);
            if f.get("MESSAGE")
                .is_some_and(|m| m.contains("running: mode"))
            {
                started = true;
            }
            if f.get("MESSAGE")
                .is_some_and(|m| m.contains("is in blacklist -> DROP."))
            {
                return Some(f);
            }
        }
        None
    });
    assert!(started, "appfw's own log lines go to the journal too");
    // The same text the trace file and syslog get.
    let msg = &block["MESSAGE"];
    assert!(msg.contains("'/usr/bin/curl'"), "{msg}");
    let trace_like = msg.lines().count() == 1 && !msg.contains("APPFW_");
    assert!(trace_like, "{msg}");
    assert_eq!(block["PRIORITY"], "4", "a block is a warning: {block:?}");
    assert_eq!(block["SYSLOG_IDENTIFIER"], "appfw");
    assert_eq!(block["APPFW_EXE"], "/usr/bin/curl");
    assert_eq!(block["APPFW_VERDICT"], "drop");
    assert_eq!(block["APPFW_REASON"], "in-blacklist");
    assert_eq!(block["APPFW_PROTO"], "tcp");
    assert_eq!(block["APPFW_DADDR"], SERVER_V4);
    assert_eq!(block["APPFW_DPORT"], HTTP_PORT.to_string());
    assert_eq!(block["APPFW_UID"], "0");
    assert!(block["APPFW_PID"].parse::<u32>().unwrap() > 1);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        !stderr.contains("DROP"),
        "reports went to the journal and stderr both: {stderr}"
    );
    // SAFETY: our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(10), "appfw to exit", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
    assert!(!rules_in(&bed.client, false).contains("APPFW"));
}
