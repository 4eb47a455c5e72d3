//! A deployer, on Conclave (etcd has no plugins): it deploys two builds of a plugin in turn,
//! through the members in turn, every 0.5–2 s, and records each deploy's answer. Once the faults
//! stop, every member must serve the build of the last deploy answered, or of one sent after it
//! whose answer was lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::check::Violation;
use super::watchers::SETTLE_TIMEOUT;
use crate::POLL;
use crate::guests::guest_wasm_with_env;
use crate::plugins::{Plugins, misbehave_manifest};

/// The plugin the deployer deploys.
const PLUGIN: &str = "k-deployed";

/// One deploy: which build (0 or 1), and whether it was answered.
#[derive(Clone, Copy, Debug)]
pub struct Deploy {
    pub build: usize,
    pub answered: bool,
}

/// The two builds' bytes: the test guest `misbehave` as it is and as version 2 (the builds the
/// plugin tests make too). Builds them if needed, blocking.
pub fn builds() -> anyhow::Result<[Vec<u8>; 2]> {
    let read = |env: &[(&str, &str)]| -> anyhow::Result<Vec<u8>> { Ok(std::fs::read(guest_wasm_with_env("misbehave", env)?)?) };
    Ok([read(&[])?, read(&[("MISBEHAVE_VERSION", "2")])?])
}

/// Deploy until `stop`; every deploy made.
pub async fn deploy_loop(endpoints: Vec<String>, builds: Arc<[Vec<u8>; 2]>, seed: u64, stop: Arc<AtomicBool>) -> Vec<Deploy> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xDE_9107);
    let members: Vec<Plugins> = endpoints.iter().map(|e| Plugins::connect_lazy(e)).collect();
    let manifest = misbehave_manifest("{}");
    let mut deploys = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        let build = deploys.len() % 2;
        let through = &members[deploys.len() % members.len()];
        let answered = through.deploy(PLUGIN, builds[build].clone(), &manifest).await.is_ok();
        deploys.push(Deploy { build, answered });
    }
    deploys
}

/// Every member serves the build of the last answered deploy, or of a later unanswered one.
pub async fn deploys_converged(endpoints: &[String], builds: &[Vec<u8>; 2], deploys: &[Deploy]) -> Vec<Violation> {
    let Some(last) = deploys.iter().rposition(|d| d.answered) else { return Vec::new() };
    let allowed: Vec<usize> = deploys[last..].iter().enumerate().filter(|(i, d)| *i == 0 || !d.answered).map(|(_, d)| d.build).collect();
    let hashes = [hash(&builds[0]), hash(&builds[1])];
    let mut found = Vec::new();
    for endpoint in endpoints {
        let member = Plugins::connect_lazy(endpoint);
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let served = loop {
            match member.get(PLUGIN).await {
                Ok(info) if allowed.iter().any(|&b| hashes[b] == info.hash) => break None,
                Ok(info) if Instant::now() > deadline => break Some(format!("serves {}", info.hash)),
                Err(e) if Instant::now() > deadline => break Some(e.to_string()),
                _ => tokio::time::sleep(POLL).await,
            }
        };
        if let Some(served) = served {
            let detail = format!("{endpoint} {served} after {SETTLE_TIMEOUT:?}; the last deploys answered or not were builds {allowed:?}");
            found.push(Violation { rule: "plugin deploy", detail, evidence: vec![format!("builds: {hashes:?}")] });
        }
    }
    found
}

/// A build's hash as the plugin service reports it (SHA-256, hex).
fn hash(wasm: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(wasm).iter().map(|b| format!("{b:02x}")).collect()
}
