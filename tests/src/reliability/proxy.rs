//! A loopback TCP proxy in front of a member's peer port: the other members reach the member
//! through it (it is the member's advertised peer URL), and a fault decides what their traffic
//! meets — an open link, a blackhole (nothing passes either way until it lifts, as when a
//! network partition heals and TCP delivers what was held), or a delay on every chunk.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What traffic through a proxy meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Open,
    /// Nothing passes, either way, until the link opens again.
    Blackhole,
    /// Each chunk waits `base` ± `jitter` before it passes (in order).
    Delay { base: Duration, jitter: Duration },
}

pub struct PeerProxy {
    port: u16,
    link: Arc<watch::Sender<Link>>,
    accepting: JoinHandle<()>,
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl PeerProxy {
    /// A proxy on an ephemeral loopback port forwarding to `target` (a member's peer port).
    pub async fn start(target: u16) -> Result<PeerProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let link = Arc::new(watch::Sender::new(Link::Open));
        let accepting = tokio::spawn(accept(listener, target, link.clone()));
        Ok(PeerProxy { port, link, accepting })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

async fn accept(listener: TcpListener, target: u16, link: Arc<watch::Sender<Link>>) {
    let mut connections = 0u64;
    while let Ok((inbound, _)) = listener.accept().await {
        connections += 1;
        let seed = u64::from(target) << 32 | connections;
        let link = link.subscribe();
        tokio::spawn(async move {
            // The member may be down: the connection just ends, as it would without the proxy.
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else { return };
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            let there = tokio::spawn(pump(in_read, out_write, link.clone(), StdRng::seed_from_u64(seed)));
            pump(out_read, in_write, link, StdRng::seed_from_u64(!seed)).await;
            there.abort();
        });
    }
}

/// Copy `from` to `to` chunk by chunk, each as the link allows, until either side closes.
async fn pump(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, mut link: watch::Receiver<Link>, mut rng: StdRng) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else { return };
        if n == 0 {
            return;
        }
        loop {
            let now = *link.borrow_and_update();
            match now {
                Link::Open => break,
                Link::Blackhole => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
                Link::Delay { base, jitter } => {
                    let spread = rng.random_range(0..=2 * jitter.as_micros() as u64);
                    let wait = (base + Duration::from_micros(spread)).saturating_sub(jitter);
                    tokio::time::sleep(wait).await;
                    break;
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
