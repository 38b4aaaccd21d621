//! The binary as a user runs it: config errors, the demo, and `run` with a clean SIGTERM shutdown.

mod common;

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{privileged, EXE, POD};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::model::volume::VolumeType;

#[test]
fn invalid_config_exits_non_zero_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("ring_buffer_bytes: 1000\n", "ring_buffer_bytes"),
        (
            "kernel_collector:\n  syscall_sampling_rate: often\n",
            "kernel_collector.syscall_sampling_rate",
        ),
        ("bogus_key: true\n", "bogus_key"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(EXE)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "error for {text:?} does not name {key}: {err}"
        );
    }
    let out = Command::new(EXE)
        .args(["run", "--ring-buffer-bytes", "12345"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ring_buffer_bytes"));
}

#[test]
fn flags_and_env_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "syscall_sampling_rate: 5\nkubelet_root: /from/file\n",
    )
    .unwrap();
    let out = Command::new(EXE)
        .args(["--print-config", "--config"])
        .arg(&path)
        .args(["--kubelet-root", "/from/flag"])
        .env("CAC_SYSCALL_SAMPLING_RATE", "9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kubelet_root"], "/from/flag");
    assert_eq!(v["syscall_sampling_rate"], 9);
}

#[test]
fn demo_reports_every_expected_access() {
    if !privileged("demo_reports_every_expected_access") {
        return;
    }
    let out = Command::new(EXE).arg("demo").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout is JSON lines"))
        .collect();
    for (kind, key) in [
        ("secret_access", "password"),
        ("configmap_access", "app.yaml"),
        ("projected_access", "token"),
        ("secret_access", "api-key"),
    ] {
        assert!(
            events
                .iter()
                .any(|e| e["event_type"] == kind && e["key"] == key),
            "no {kind} {key} in {events:#?}"
        );
    }
    // The sandbox pod's metadata reaches the events: names, not nulls.
    let password = events.iter().find(|e| e["key"] == "password").unwrap();
    assert_eq!(
        (
            &password["namespace"],
            &password["pod_name"],
            &password["config_name"],
            &password["container"]["name"]
        ),
        (
            &json!("demo"),
            &json!("payments-api-0"),
            &json!("db-credentials"),
            &json!("app")
        ),
        "{password:#}"
    );
    // It ends with the usage report: keys read and never read.
    let row = stderr
        .lines()
        .find(|l| l.contains("db-creds (secret)"))
        .unwrap_or_else(|| panic!("no usage report in {stderr}"));
    assert!(
        row.contains("api-key, username") && row.contains("password"),
        "{row}"
    );
    // And the rotation: the app re-read its password, the cache warmer did not.
    let reader = |command: &str| {
        stderr
            .lines()
            .find(|l| l.contains(command) && l.contains("db-creds"))
            .unwrap_or_else(|| panic!("no {command} row in {stderr}"))
    };
    assert!(reader("cache-warmer").contains("STALE for"), "{stderr}");
    assert!(
        reader("app-server").contains("re-read the current revision"),
        "{stderr}"
    );
}

#[test]
fn run_prints_json_lines_and_stops_cleanly_on_sigterm() {
    if !privileged("run_prints_json_lines_and_stops_cleanly_on_sigterm") {
        return;
    }
    let mut sb = Sandbox::new().unwrap();
    let dir = sb
        .add_volume(POD, VolumeType::Secret, "creds", true)
        .unwrap();
    sb.write_atomic(&dir, &[("password", b"x", 0o644)]).unwrap();
    let mut child = Command::new(EXE)
        .arg("run")
        .arg("--kubelet-root")
        .arg(sb.kubelet_root())
        .args(["--health-listen", "127.0.0.1:0", "--no-kube"])
        .arg("--api-socket")
        .arg(sb.scratch().join("api.sock"))
        .arg("--output-file")
        .arg(sb.scratch().join("out/events.jsonl"))
        .env("CAC_LOG_LEVEL", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("collector started")) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "collector did not start: {log:#?}"
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            log.push(l);
        }
    }
    let target = dir.join("password");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).map(|_| line)
    });
    drop(std::fs::File::open(&target).unwrap());
    let line = reader.join().unwrap().unwrap();
    let ev: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(ev["event_type"], "secret_access");
    assert_eq!(ev["key"], "password");
    assert_eq!(ev["path"], target.to_str().unwrap());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    log.extend(rx.iter());
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:#?}");
    let file = std::fs::read_to_string(sb.scratch().join("out/events.jsonl")).unwrap();
    let in_file: serde_json::Value = serde_json::from_str(file.lines().next().unwrap()).unwrap();
    assert_eq!(
        in_file, ev,
        "the file output holds the same event as stdout"
    );
}

/// Runs the binary with `args` and `env` (every other `CAC_*` variable removed).
fn run_with(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(EXE);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("CAC_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flags, environment, text the error must hold, text it must not hold.
type BadInput<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);

#[test]
fn bad_flags_and_environment_variables_exit_1_naming_the_source() {
    let cases: &[BadInput] = &[
        (
            &["--ring-buffer-bytes", "abc"],
            &[],
            "--ring-buffer-bytes",
            "CAC_",
        ),
        (&["--no-such-flag"], &[], "--no-such-flag", "CAC_"),
        (
            &["--kubelet-writes", "sometimes"],
            &[],
            "--kubelet-writes",
            "CAC_",
        ),
        (
            &[],
            &[("CAC_RING_BUFFER_BYTES", "abc")],
            "environment variable CAC_RING_BUFFER_BYTES",
            "\n\n",
        ),
        (
            &[],
            &[("CAC_KUBELET_WRITES", "sometimes")],
            "environment variable CAC_KUBELET_WRITES",
            "\n\n",
        ),
        (
            &[],
            &[("CAC_NO_KUBE", "maybe")],
            "environment variable CAC_NO_KUBE",
            "\n\n",
        ),
        (
            &["run"],
            &[("CAC_SYSCALL_SAMPLING_RATE", "-1")],
            "environment variable CAC_SYSCALL_SAMPLING_RATE",
            "\n\n",
        ),
        // Values clap accepts but the configuration refuses.
        (
            &[],
            &[("CAC_RING_BUFFER_BYTES", "12345")],
            "environment variable CAC_RING_BUFFER_BYTES: config key `ring_buffer_bytes`",
            "--ring-buffer-bytes",
        ),
        (
            &["--ring-buffer-bytes", "12345"],
            &[],
            "flag --ring-buffer-bytes: config key `ring_buffer_bytes`",
            "CAC_",
        ),
        (
            &["--health-listen", "9890"],
            &[],
            "flag --health-listen: config key `health_listen`",
            "CAC_",
        ),
        (
            &[],
            &[("CAC_API_SOCKET", "relative.sock")],
            "environment variable CAC_API_SOCKET: config key `api_socket`",
            "--api-socket",
        ),
    ];
    for (flags, env, want, unwanted) in cases {
        let mut args = flags.to_vec();
        args.push("--print-config");
        let (code, err) = run_with(&args, env);
        assert_eq!(
            code,
            Some(1),
            "{flags:?} {env:?}: exit status {code:?} (docs say 1): {err}"
        );
        assert!(
            err.contains(want),
            "{flags:?} {env:?}: no {want:?} in: {err}"
        );
        assert!(
            !err.contains(unwanted),
            "{flags:?} {env:?}: {unwanted:?} in: {err}"
        );
    }
    // A flag wins over its variable: the variable's bad value is not used.
    let (code, err) = run_with(
        &["--ring-buffer-bytes", "8388608", "--print-config"],
        &[("CAC_RING_BUFFER_BYTES", "abc")],
    );
    assert_eq!(code, Some(0), "{err}");
    // Help and version are not errors.
    for flag in ["--help", "--version"] {
        let (code, err) = run_with(&[flag], &[]);
        assert_eq!(code, Some(0), "{flag}: {err}");
    }
}

#[test]
fn yaml_syntax_error_gives_line_and_column_and_blames_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    // Line 3 is indented with a tab; the parser was still inside `stdout`.
    std::fs::write(&path, "log_level: info\nstdout: true\n\tapi_socket: off\n").unwrap();
    let (code, err) = run_with(&["--print-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not valid YAML"), "{err}");
    assert!(err.contains("line 3, column 1"), "{err}");
    for key in ["stdout", "log_level", "api_socket", "config key"] {
        assert!(!err.contains(key), "the error blames {key:?}: {err}");
    }
}

#[test]
fn an_io_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let (code, err) = run_with(&["--config", missing.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{err}");
    let line = format!(
        "config-access-collector: error: flag --config: reading config file {}: No such file or directory (os error 2)\n",
        missing.display()
    );
    assert_eq!(err, line);
}

/// A pod directory whose name holds a newline and then what looks like a
/// log line, and a volume whose name holds terminal escape sequences.
const FORGED_POD: &str = "0000\n2026-01-01T00:00:00.000000Z ERROR FORGED volume tampering";
const FORGED_VOLUME: &str = "creds\u{1b}[2K\u{1b}[1Acleared\r";

#[test]
fn a_newline_in_a_pod_directory_name_cannot_forge_a_log_line() {
    if !privileged("a_newline_in_a_pod_directory_name_cannot_forge_a_log_line") {
        return;
    }
    let mut sb = Sandbox::new().unwrap();
    // One volume is there at start (the first scan), one comes later (the watcher).
    sb.add_volume(FORGED_POD, VolumeType::Secret, FORGED_VOLUME, false)
        .unwrap();
    let mut child = Command::new(EXE)
        .arg("run")
        .arg("--kubelet-root")
        .arg(sb.kubelet_root())
        .args(["--health-listen", "off", "--no-kube", "--api-socket", "off"])
        .env("CAC_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = BufReader::new(stderr);
        let mut line = Vec::new();
        while stderr.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    });
    let mut log: Vec<String> = Vec::new();
    let mut wait_for = |what: &str, n: usize| {
        let end = Instant::now() + Duration::from_secs(30);
        while log.iter().filter(|l| l.contains(what)).count() < n {
            assert!(Instant::now() < end, "no {what:?} (x{n}) in {log:#?}");
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                log.push(l);
            }
        }
    };
    wait_for("collector started", 1);
    wait_for("watching volume", 1);
    let late = sb
        .add_volume(FORGED_POD, VolumeType::ConfigMap, FORGED_VOLUME, false)
        .unwrap();
    wait_for("watching volume", 2);
    std::fs::remove_dir(&late).unwrap();
    wait_for("volume gone", 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    log.extend(rx.iter());
    assert!(status.success(), "{status}: {log:#?}");
    for line in &log {
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z"),
            "a pod directory name forged a log line: {line:?} in {log:#?}"
        );
        assert!(
            !line.contains(['\u{1b}', '\r']),
            "a control character reached the log: {line:?}"
        );
    }
    // Each logged name is there, escaped, on its own line.
    for what in ["watching volume", "volume gone"] {
        assert!(
            log.iter().any(|l| l.contains(what)
                && l.contains("0000\\n2026-01-01T00:00:00.000000Z ERROR FORGED volume tampering")
                && l.contains("creds\\u{1b}[2K\\u{1b}[1Acleared\\r")),
            "no escaped {what:?} line in {log:#?}"
        );
    }
}
