//! `conclavectl plugin …` against a real member: deploy, list, get, invoke (unary and streaming)
//! and remove, one `Error:` line and a non-zero exit on failure, and a plugin scaffolded with
//! `plugin new`, built for wasm32-wasip2, deployed and called.

use std::path::Path;

use conclave_tests::conclavectl::{failed, ok, run as ctl};
use conclave_tests::guests::{build_workspace, guest_wasm};
use conclave_tests::plugins::{Plugins, misbehave_manifest, with_builtins};
use conclave_tests::{Kind, Node, etcdctl};

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_get_invoke_and_remove_with_conclavectl() {
    let wasm = tokio::task::block_in_place(|| guest_wasm("misbehave")).unwrap_or_else(|e| panic!("{e:#}"));
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let ep = node.endpoint();
    let dir = tempfile::tempdir().expect("a temp dir");
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, misbehave_manifest("{}")).expect("write the manifest");

    let cli = |args: &[&str]| tokio::task::block_in_place(|| ctl(&ep, args));

    let deployed = ok(cli(&["plugin", "deploy", "misb", path(&wasm), "--manifest", path(&manifest)]));
    let hash = Plugins::connect(&ep).await.get("misb").await.expect("deployed").hash;
    assert!(deployed.starts_with("Plugin misb deployed: version 1, sha256 "), "{deployed}");
    assert!(deployed.contains(&hash) && deployed.contains("echo (unary)") && deployed.contains("emit (streaming)"), "{deployed}");
    assert_eq!(deployed.lines().count(), 1, "{deployed}");

    let list = ok(cli(&["plugin", "list"]));
    let names: Vec<&str> = list.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names, with_builtins(&["misb"]), "{list}");
    let misb = list.lines().find(|l| l.starts_with("misb ")).unwrap();
    assert!(misb.starts_with(&format!("misb 1 {}", &hash[..12])), "{list}");

    let got = ok(cli(&["plugin", "get", "misb"]));
    for line in ["name: misb", "version: 1", &format!("hash: {hash}"), "builtin: false"] {
        assert!(got.lines().any(|l| l == line), "{line:?} not in:\n{got}");
    }
    assert!(got.contains("allowed/"), "the manifest is shown:\n{got}");

    assert_eq!(ok(cli(&["plugin", "invoke", "misb", "echo", "hello"])), "hello\n");
    assert_eq!(ok(cli(&["plugin", "invoke", "misb", "noop"])), "\n");
    assert_eq!(ok(cli(&["plugin", "invoke", "misb", "emit", "3", "--stream"])), "0\n1\n2\n");
    let added = ok(cli(&["plugin", "invoke", "counter", "add", r#"{"name":"cli","delta":5}"#]));
    assert!(added.contains(r#""value":5"#), "{added}");

    // Failures: one line, non-zero exit.
    let error = failed(cli(&["plugin", "invoke", "nope", "x"]));
    assert!(error.contains("nope"), "{error}");
    let error = failed(cli(&["plugin", "invoke", "misb", "trap"]));
    assert!(error.contains("trapped") && error.contains("misbehave: trap requested"), "{error}");
    let error = failed(cli(&["plugin", "invoke", "misb", "forbidden-put"]));
    assert!(error.contains("permission denied"), "{error}");
    let error = failed(cli(&["plugin", "deploy", "bad", path(&manifest)]));
    assert!(error.contains("plugin bad") && error.contains("not WebAssembly"), "{error}");
    failed(cli(&["plugin", "deploy", "bad", "/no/such/file.wasm"]));
    let error = failed(cli(&["plugin", "remove", "counter"]));
    assert!(error.contains("counter"), "{error}");

    assert_eq!(ok(cli(&["plugin", "remove", "misb"])), "Plugin misb removed\n");
    let list = ok(cli(&["plugin", "list"]));
    assert!(!list.contains("misb"), "{list}");
    let error = failed(cli(&["plugin", "get", "misb"]));
    assert!(error.contains("not found"), "{error}");
    failed(cli(&["plugin", "remove", "misb"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_made_with_plugin_new_builds_deploys_and_answers() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let ep = node.endpoint();
    let dir = tempfile::tempdir().expect("a temp dir");
    let crate_dir = dir.path().join("greeter");

    let created = tokio::task::block_in_place(|| ok(ctl(&ep, &["plugin", "new", "greeter", "--dir", path(&crate_dir)])));
    assert!(created.starts_with("Created plugin greeter in "), "{created}");
    // A shared target dir keeps the SDK's dependencies built between runs.
    let release = tokio::task::block_in_place(|| build_workspace(&crate_dir.join("Cargo.toml"), "wasm-plugin-new"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let wasm = release.join("greeter.wasm");
    assert!(wasm.is_file(), "{} was not built", wasm.display());

    let cli = |args: &[&str]| tokio::task::block_in_place(|| ctl(&ep, args));
    let manifest = crate_dir.join("manifest.json");
    let deployed = ok(cli(&["plugin", "deploy", "greeter", path(&wasm), "--manifest", path(&manifest)]));
    assert!(deployed.contains("hello (unary)") && deployed.contains("watch (streaming)"), "{deployed}");
    assert_eq!(ok(cli(&["plugin", "invoke", "greeter", "hello", "Ada"])), "Hello, Ada!\n");
    assert_eq!(ok(cli(&["plugin", "invoke", "greeter", "hello"])), "Hello, world!\n");
    let count = etcdctl(&ep, &["get", "greeter/greetings", "--print-value-only"], None).expect("etcdctl");
    assert_eq!(count.stdout, "2\n", "{count:?}");
}
