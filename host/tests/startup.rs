//! The `conclave` binary refuses bad flags and data directories it must not touch, with a clear
//! message and without changing them. (This integration test also makes `cargo test --workspace`
//! build the binary that the `conclave-tests` crate drives.)

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

fn conclave(data_dir: &Path, name: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
    cmd.args(["--name", name, "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", "http://127.0.0.1:0"])
        .args(["--listen-peer-urls", "http://127.0.0.1:0"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-cluster", &format!("{name}=http://127.0.0.1:2380")])
        .args(extra);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("conclave runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Start a member, wait until it serves, then stop it: leaves an initialised data directory.
fn initialise(data_dir: &Path, name: &str) {
    serve_once(conclave(data_dir, name, &[]));
}

/// Start a member, wait until it serves, then stop it; returns its log (stderr) up to there.
fn serve_once(mut cmd: Command) -> String {
    let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("conclave starts");
    let (log, served) = read_until_serving(child.stderr.take().expect("stderr is piped"));
    stop(&mut child);
    assert!(served, "conclave exited before serving:\n{log}");
    log
}

fn stop(child: &mut Child) {
    child.kill().expect("kill conclave");
    child.wait().expect("wait for conclave");
}

/// Read `log` line by line until the member says it serves (true) or the log ends (false).
/// Returns the lines read.
fn read_until_serving(log: impl Read) -> (String, bool) {
    let mut printed = String::new();
    for line in BufReader::new(log).lines() {
        let line = line.expect("the log is readable");
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("ready to serve client requests") {
            return (printed, true);
        }
    }
    (printed, false)
}

/// Each file of `dir` with a digest of its content (a changed file shows as a changed digest).
fn snapshot_files(dir: &Path) -> Vec<(String, u64)> {
    use std::hash::{Hash, Hasher};
    let mut files = Vec::new();
    for entry in walk(dir) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(&entry).expect("read data file").hash(&mut hasher);
        files.push((entry.display().to_string(), hasher.finish()));
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read data dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

#[test]
fn unknown_flag_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(conclave(dir.path(), "a", &["--no-such-flag"]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--no-such-flag"), "{}", stderr(&output));
}

#[test]
fn own_name_must_be_in_initial_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
    cmd.args(["--name", "a", "--data-dir"]).arg(dir.path().join("d")).args([
        "--listen-client-urls",
        "http://127.0.0.1:0",
        "--listen-peer-urls",
        "http://127.0.0.1:0",
        "--initial-cluster",
        "b=http://127.0.0.1:2380",
    ]);
    let output = run(cmd);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("couldn't find local name \"a\""), "{}", stderr(&output));
}

#[test]
fn data_dir_of_another_member_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    initialise(&data, "alpha");
    let before = snapshot_files(&data);
    let output = run(conclave(&data, "beta", &[]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("belongs to member \"alpha\""), "{}", stderr(&output));
    assert_eq!(snapshot_files(&data), before, "a refused data dir must not change");
}

#[test]
fn data_dir_of_an_earlier_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    initialise(&data, "alpha");
    // What builds before the member-attributes format wrote: no data_format field.
    let identity = std::fs::read_to_string(data.join("member.json")).unwrap();
    let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&identity).unwrap();
    fields.remove("data_format").expect("this build writes data_format");
    std::fs::write(data.join("member.json"), serde_json::to_vec(&fields).unwrap()).unwrap();
    let before = snapshot_files(&data);
    let output = run(conclave(&data, "alpha", &[]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("data format 0") && stderr(&output).contains("--restore-snapshot"), "{}", stderr(&output));
    assert_eq!(snapshot_files(&data), before, "a refused data dir must not change");
}

#[test]
fn corrupt_data_dir_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    initialise(&data, "alpha");
    for file in walk(&data.join("db")) {
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.iter_mut().for_each(|b| *b ^= 0x5a);
        std::fs::write(&file, bytes).unwrap();
    }
    let before = snapshot_files(&data);
    let output = run(conclave(&data, "alpha", &[]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&data.display().to_string()), "{}", stderr(&output));
    assert_eq!(snapshot_files(&data), before, "a refused data dir must not change");
}

#[test]
fn etcd_environment_variables_configure_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-env");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
    cmd.env("ETCD_NAME", "envnode")
        .env("ETCD_DATA_DIR", &data)
        .env("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:0")
        .env("ETCD_LISTEN_PEER_URLS", "http://127.0.0.1:0")
        .env("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://127.0.0.1:2380")
        .env("ETCD_INITIAL_CLUSTER", "envnode=http://127.0.0.1:2380");
    serve_once(cmd);
    let identity = std::fs::read_to_string(data.join("member.json")).expect("member.json written");
    assert!(identity.contains("\"envnode\""), "{identity}");
}

/// Run a member that must refuse to start, and return what it printed on stderr. One that
/// serves instead is stopped and fails the test (rather than leaving it waiting forever).
fn refused(mut cmd: Command) -> String {
    let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("conclave starts");
    let (printed, served) = read_until_serving(child.stderr.take().expect("stderr is piped"));
    if served {
        stop(&mut child);
        panic!("conclave serves when it must refuse to start:\n{printed}");
    }
    assert!(!child.wait().expect("wait for conclave").success(), "conclave must refuse to start:\n{printed}");
    printed
}

/// TLS flags that cannot be honoured as given, each with a value and the words of its refusal:
/// a certificate without its key, and the settings Conclave does not implement yet.
const TLS_REFUSALS: [(&str, &str, &str); 11] = [
    ("cert-file", "server.pem", "a TLS certificate needs both its cert file and its key file"),
    ("key-file", "server-key.pem", "a TLS certificate needs both its cert file and its key file"),
    ("peer-cert-file", "peer.pem", "a TLS certificate needs both its cert file and its key file"),
    ("peer-key-file", "peer-key.pem", "a TLS certificate needs both its cert file and its key file"),
    ("client-crl-file", "client.crl", "not supported yet"),
    ("client-cert-allowed-hostname", "client.example", "not supported yet"),
    ("peer-cert-allowed-cn", "peer.example", "not supported yet"),
    ("peer-cert-allowed-hostname", "peer.example", "not supported yet"),
    ("peer-crl-file", "peer.crl", "not supported yet"),
    ("cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "not supported yet"),
    ("experimental-peer-skip-client-san-verification", "true", "not supported yet"),
];

#[test]
fn tls_environment_variables_are_read_not_ignored() {
    for (flag, value, refusal) in TLS_REFUSALS {
        let dir = tempfile::tempdir().unwrap();
        let var = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
        let mut cmd = conclave(&dir.path().join("d"), "a", &[]);
        cmd.env(&var, value);
        let printed = refused(cmd);
        assert!(printed.contains(refusal), "{var}={value}:\n{printed}");
    }
}

#[test]
fn tls_flags_that_cannot_be_honoured_are_refused() {
    for (flag, value, refusal) in TLS_REFUSALS {
        let dir = tempfile::tempdir().unwrap();
        let printed = refused(conclave(&dir.path().join("d"), "a", &[&format!("--{flag}={value}")]));
        assert!(printed.contains(refusal), "--{flag}:\n{printed}");
        if refusal == "not supported yet" {
            assert!(printed.contains(&format!("--{flag}")), "--{flag}:\n{printed}");
        }
    }
}

#[test]
fn https_listen_urls_need_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
    cmd.args(["--data-dir"]).arg(dir.path().join("d")).args([
        "--listen-client-urls",
        "https://127.0.0.1:0",
        "--listen-peer-urls",
        "http://127.0.0.1:0",
    ]);
    assert!(refused(cmd).contains("must be provided for client url https://127.0.0.1:0 with HTTPS scheme"));
    let dir = tempfile::tempdir().unwrap();
    let cmd = conclave(&dir.path().join("d"), "a", &["--listen-metrics-urls", "https://127.0.0.1:0"]);
    assert!(refused(cmd).contains("must be provided for metrics url https://127.0.0.1:0 with HTTPS scheme"));
}

#[test]
fn tls_switches_set_to_false_ask_for_nothing_secure() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = conclave(&dir.path().join("d"), "a", &["--peer-auto-tls=false"]);
    cmd.env("ETCD_CLIENT_CERT_AUTH", "false").env("ETCD_AUTO_TLS", "0").env("ETCD_CERT_FILE", "");
    serve_once(cmd);
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = serve_once(conclave(&dir.path().join("d"), "a", &[]));
    assert!(!log.contains("\x1b["), "{log:?}");
}

#[test]
fn log_outputs_stdout_logs_to_stdout_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = conclave(&dir.path().join("d"), "a", &["--log-outputs", "stdout"]);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("conclave starts");
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let child = Arc::new(Mutex::new(child));
    // Whichever stream says the member serves stops it, so the other one ends too.
    let on_stderr = {
        let child = child.clone();
        std::thread::spawn(move || {
            let (log, served) = read_until_serving(stderr);
            if served {
                child.lock().unwrap().kill().expect("kill conclave");
            }
            log
        })
    };
    let (log, served) = read_until_serving(stdout);
    stop(&mut child.lock().unwrap());
    let on_stderr = on_stderr.join().expect("stderr reader");
    assert!(served, "nothing served on stdout:\n{log}\nstderr:\n{on_stderr}");
    assert!(!log.contains("\x1b["), "{log:?}");
    assert_eq!(on_stderr, "");
}

#[test]
fn log_outputs_file_path_appends_plain_text_to_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conclave.log");
    std::fs::write(&file, "an earlier line\n").unwrap();
    // The file comes first, so it has each line by the time stderr shows it.
    let outputs = format!("{},stderr", file.display());
    serve_once(conclave(&dir.path().join("d"), "a", &["--log-outputs", &outputs]));
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.starts_with("an earlier line\n"), "{written}");
    assert!(written.contains("ready to serve client requests"), "{written}");
    assert!(!written.contains("\x1b["), "{written:?}");
}

#[test]
fn loggers_are_checked_as_etcd_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = refused(conclave(&dir.path().join("d"), "a", &["--logger", "glog"]));
    assert!(unknown.contains("unknown logger option \"glog\""), "{unknown}");
    let capnslog_file = refused(conclave(&dir.path().join("d"), "a", &["--logger", "capnslog", "--log-outputs", "x.log"]));
    assert!(capnslog_file.contains("unknown log-output \"x.log\""), "{capnslog_file}");
    let capnslog = serve_once(conclave(&dir.path().join("d"), "a", &["--logger", "capnslog"]));
    assert!(capnslog.contains("Deprecated '--logger=capnslog' flag is set"), "{capnslog}");
}

#[test]
fn restoring_a_snapshot_that_claims_a_huge_entry_fails_clearly() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    // An intact file (its SHA-256 trailer matches) whose first entry claims 1 TB.
    let mut body = b"conclave-store-1".to_vec();
    body.extend_from_slice(&1_000_000_000_000u64.to_be_bytes());
    body.extend_from_slice(b"only a few bytes follow");
    let digest = sha2::Sha256::digest(&body);
    body.extend_from_slice(&digest);
    let snapshot = dir.path().join("huge.db");
    std::fs::write(&snapshot, &body).unwrap();
    let printed = refused(conclave(&dir.path().join("d"), "a", &["--restore-snapshot", snapshot.to_str().unwrap()]));
    assert!(
        printed.contains("corrupt data: a snapshot entry claims 1000000000000 bytes but the snapshot ends 23 bytes later"),
        "{printed}"
    );
}
