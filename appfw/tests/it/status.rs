//! `appfw status`: a running daemon's state and counters, asked over its
//! socket from the same network namespace.

use std::time::Duration;

use crate::testbed::*;

fn status(bed: &Bed, args: &[&str]) -> std::process::Output {
    bed.in_client(appfw_bin())
        .arg("status")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn status_shows_the_daemons_counters_and_kernel_queue() {
    let mut bed = Bed::new();
    bed.serve();
    let d = Daemon::start(
        &bed,
        &["-b", "--queue-num", "3"],
        Some("[global]\nblacklist = [\"/usr/bin/curl\"]\n"),
    );
    for _ in 0..2 {
        assert!(!bed.curl(SERVER_V4, 1.0).status.success());
    }
    let py = bed.python_get(SERVER_V4, 5.0);
    assert!(py.status.success(), "{py:?}");
    // The queue thread publishes about once a second.
    let json: serde_json::Value = wait_for(Duration::from_secs(5), "the counters", || {
        let out = status(&bed, &["--json", "--queue-num", "3"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // The kernel's own packets (IPv6 neighbour discovery) may count
        // as accepted before python's flow is published: wait for it.
        let python = v["top_talkers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["exe"] == python_exe().as_str());
        (v["counters"]["blocked"].as_u64() >= Some(2)
            && v["counters"]["accepted"].as_u64() >= Some(1)
            && python)
            .then_some(v)
    });
    assert_eq!(json["mode"], "blacklist");
    assert_eq!(json["queue"], 3);
    assert_eq!(json["fail"], "open");
    assert_eq!(json["pid"].as_u64(), Some(u64::from(d.pid)));
    assert_eq!(json["rules"]["v4"], true);
    assert_eq!(json["rules"]["v6"], true);
    assert!(json["config"].as_str().unwrap().ends_with("appfw.toml"));
    let packets = json["counters"]["packets"].as_u64().unwrap();
    let k = &json["kernel_queue"];
    assert!(
        k["total"].as_u64().unwrap() >= packets && packets >= 3,
        "kernel queue {k}, packets {packets}"
    );
    assert_eq!(k["dropped"], 0);
    // Top talkers: each connect is one flow of its executable, most first.
    let talkers = json["top_talkers"].as_array().unwrap();
    let curl_flows = serde_json::json!({"exe": curl(), "flows": 2, "accepted": 0, "blocked": 2});
    let python_flows =
        serde_json::json!({"exe": python_exe(), "flows": 1, "accepted": 1, "blocked": 0});
    assert_eq!(talkers.first(), Some(&curl_flows), "{json}");
    assert!(talkers.contains(&python_flows), "{json}");
    assert_eq!(json["other_flows"]["accepted"], 0);
    assert_eq!(json["other_flows"]["blocked"], 0);

    let out = status(&bed, &["--queue-num", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "running, mode blacklist, queue 3",
        "IPv4 installed, IPv6 installed; fail open",
        "kernel queue: total ",
        &format!("(pid {})", d.pid),
        "top talkers:",
        &format!("         2        0        2  {}\n", curl()),
        &format!("         1        1        0  {}\n", python_exe()),
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
    d.stop();
}

#[test]
fn status_without_a_daemon_says_so_and_non_root_is_refused() {
    let mut bed = Bed::new();
    bed.serve();
    let out = status(&bed, &["--queue-num", "5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no appfw daemon runs for queue 5 in this network namespace"),
        "{err}"
    );

    let d = Daemon::start(&bed, &["-m", "--queue-num", "5"], Some("[global]\n"));
    let out = bed
        .in_client("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(appfw_bin())
        .args(["status", "--queue-num", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs root"),
        "{out:?}"
    );
    d.stop();
}
