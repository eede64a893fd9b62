//! What appfw mounts for itself (tracefs, cgroup v2) on a machine where
//! nothing is mounted yet, with several instances starting at once: the
//! first run on a new machine, two queues started together, a restart
//! racing a test.

use std::process::Command;

use crate::testbed::*;

const INSTANCES: usize = 6;

#[test]
fn instances_starting_together_all_mount_and_run() {
    let bed = Bed::new();
    let config = write_config(&bed.dir, "[global]\n");
    // `ip netns exec` runs the script in a private mount namespace with a
    // fresh /sys, where neither tracefs nor cgroup v2 is mounted: the state
    // of a new machine, without touching this machine's own mounts.
    let script = r#"
set -u
if mountpoint -q /sys/kernel/tracing; then echo "precondition failed: tracefs is mounted"; exit 3; fi
if grep -q ' cgroup2 ' /proc/self/mounts; then echo "precondition failed: cgroup2 is mounted"; exit 3; fi
pids=()
for i in $(seq 1 "$N"); do
    "$APPFW" -m --no-rules --queue-num $((300 + i)) -c "$CONF" >/dev/null 2>"$DIR/start-$i.err" &
    pids+=($!)
done
deadline=$((SECONDS + 40))
for i in $(seq 1 "$N"); do
    until grep -q "running: mode" "$DIR/start-$i.err" || grep -q "^appfw: " "$DIR/start-$i.err" \
        || [ "$SECONDS" -ge "$deadline" ]; do
        sleep 0.1
    done
done
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for i in $(seq 1 "$N"); do
    wait "${pids[$((i - 1))]}"
    echo "instance $i exit $?"
done
mountpoint -q /sys/kernel/tracing && echo "tracefs mounted"
"#;
    let out = Command::new("ip")
        .args(["netns", "exec", &bed.client, "bash", "-c", script])
        .env("N", INSTANCES.to_string())
        .env("APPFW", appfw_bin())
        .env("CONF", &config)
        .env("DIR", &bed.dir)
        .output()
        .expect("running the start script");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let logs: String = (1..=INSTANCES)
        .map(|i| {
            let err =
                std::fs::read_to_string(bed.dir.join(format!("start-{i}.err"))).unwrap_or_default();
            format!("--- instance {i}:\n{err}")
        })
        .collect();
    assert!(out.status.success(), "{report}\n{logs}");
    for i in 1..=INSTANCES {
        let err = std::fs::read_to_string(bed.dir.join(format!("start-{i}.err"))).unwrap();
        assert!(
            err.contains("running: mode"),
            "instance {i} did not start:\n{report}\n{logs}"
        );
        assert!(
            report.contains(&format!("instance {i} exit 0")),
            "instance {i} did not stop cleanly:\n{report}\n{logs}"
        );
    }
    assert!(report.contains("tracefs mounted"), "{report}");
}
