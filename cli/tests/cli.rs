//! `conclavectl` on its own (the integration suite in `tests/` runs it against real members).

use std::process::Command;

#[test]
fn dump_log_refuses_a_missing_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = Command::new(env!("CARGO_BIN_EXE_conclavectl")).arg("dump-log").arg("--data-dir").arg(&missing).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no member database"), "unexpected error: {stderr}");
    // Nothing was created on the way.
    assert!(!missing.exists());
}

/// Runs with only the given ETCDCTL_* variables, whatever the caller's shell has set.
fn conclavectl(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conclavectl"));
    for var in ["ETCDCTL_ENDPOINTS", "ETCDCTL_DIAL_TIMEOUT", "ETCDCTL_COMMAND_TIMEOUT", "ETCDCTL_WRITE_OUT"] {
        command.env_remove(var);
    }
    let out = command.args(args).envs(env.iter().copied()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn no_endpoint_answering_is_etcdctls_deadline() {
    let (ok, _, stderr) = conclavectl(&["--endpoints", "127.0.0.1:1", "--dial-timeout", "300ms", "plugin", "list"], &[]);
    assert!(!ok);
    assert_eq!(stderr, "Error: context deadline exceeded\n");
}

#[test]
fn a_flag_shadowing_its_variable_is_refused() {
    let (ok, _, stderr) = conclavectl(&["--endpoints", "127.0.0.1:1", "plugin", "list"], &[("ETCDCTL_ENDPOINTS", "127.0.0.1:2")]);
    assert!(!ok);
    assert!(stderr.starts_with("Error: conflicting environment variable \"ETCDCTL_ENDPOINTS\""), "{stderr}");
}

#[test]
fn variables_are_read_and_split() {
    // The https:// endpoint was read: it turned TLS on, which needs a CA to verify with.
    let (ok, _, stderr) = conclavectl(&["plugin", "list"], &[("ETCDCTL_ENDPOINTS", "127.0.0.1:1,https://127.0.0.1:2")]);
    assert!(!ok);
    assert_eq!(stderr, "Error: TLS settings: verifying a TLS server needs a trusted CA file (system roots are not read)\n");
    let (ok, _, stderr) = conclavectl(&["plugin", "list", "--dial-timeout", "300ms"], &[("ETCDCTL_ENDPOINTS", "127.0.0.1:1,127.0.0.1:2"), ("ETCDCTL_INSECURE_TRANSPORT", "false"), ("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", "true")]);
    assert!(!ok);
    assert_eq!(stderr, "Error: context deadline exceeded\n");
}

#[test]
fn every_failure_is_one_error_line() {
    let cases: [&[&str]; 4] = [
        &["plugin", "deploy", "counter", "/nonexistent/counter.wasm"],
        &["-w", "yaml", "plugin", "list"],
        &["plugin", "list", "--no-such-flag"],
        &["plugin", "new", "Counter"],
    ];
    for args in cases {
        let (ok, stdout, stderr) = conclavectl(args, &[]);
        assert!(!ok, "{args:?} succeeded");
        assert!(stdout.is_empty(), "{args:?} printed {stdout}");
        assert!(stderr.starts_with("Error: ") && stderr.lines().count() == 1, "{args:?}: {stderr}");
    }
}
