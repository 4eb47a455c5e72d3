//! Loopback TCP proxies in front of the members' peer ports, and the faults their traffic meets.
//!
//! Each member's peers reach it through a proxy of its own (the proxy is the member's advertised
//! peer URL). A proxy finds which member dialed each connection (the process owning the other
//! end of the socket, see [`dialer`]), so every byte it carries belongs to one directed link
//! `from → to`: what the dialer sends is `dialer → member`, the answers `member → dialer`. A
//! [`Network`] holds what each directed link meets — open, a blackhole (nothing passes until it
//! lifts, as when a partition heals and TCP delivers what was held), a delay on every chunk, or
//! losses (a lost chunk breaks its connection, which the dialer must notice and re-dial).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What traffic on one directed link meets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    Open,
    /// Nothing passes until the link opens again.
    Blackhole,
    /// Each chunk waits `base` ± `jitter` before it passes (in order).
    Delay { base: Duration, jitter: Duration },
    /// Each chunk is lost with this probability, and its connection with it.
    Lossy(f64),
}

/// The state of every directed link between `members` members: `links[from][to]`.
#[derive(Clone, Debug)]
struct Links(Vec<Vec<Link>>);

/// Which links a fault touches, for one member.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    Into,
    OutOf,
    Both,
}

/// The links between the members of one run.
pub struct Network {
    links: Arc<watch::Sender<Links>>,
    proxies: Vec<PeerProxy>,
}

impl Network {
    /// A proxy for each of `targets` (the members' peer ports, in member order), every link open.
    pub async fn start(targets: &[u16]) -> Result<Network> {
        let open = Links(vec![vec![Link::Open; targets.len()]; targets.len()]);
        let links = Arc::new(watch::Sender::new(open));
        let mut proxies = Vec::new();
        for (member, &target) in targets.iter().enumerate() {
            proxies.push(PeerProxy::start(member, target, links.clone()).await?);
        }
        Ok(Network { links, proxies })
    }

    /// The port the peers of member `member` dial.
    pub fn port(&self, member: usize) -> u16 {
        self.proxies[member].port
    }

    /// Set the links of `member` in `direction` to `link`, leaving the others as they are.
    pub fn set(&self, member: usize, direction: Direction, link: Link) {
        self.links.send_modify(|Links(links)| {
            for other in (0..links.len()).filter(|&o| o != member) {
                if matches!(direction, Direction::Into | Direction::Both) {
                    links[other][member] = link;
                }
                if matches!(direction, Direction::OutOf | Direction::Both) {
                    links[member][other] = link;
                }
            }
        });
    }

    /// Open every link.
    pub fn heal(&self) {
        self.links.send_modify(|Links(links)| links.iter_mut().flatten().for_each(|l| *l = Link::Open));
    }
}

/// A proxy on an ephemeral loopback port forwarding to one member's peer port.
struct PeerProxy {
    port: u16,
    accepting: JoinHandle<()>,
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl PeerProxy {
    async fn start(member: usize, target: u16, links: Arc<watch::Sender<Links>>) -> Result<PeerProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepting = tokio::spawn(accept(listener, member, target, links));
        Ok(PeerProxy { port, accepting })
    }
}

async fn accept(listener: TcpListener, member: usize, target: u16, links: Arc<watch::Sender<Links>>) {
    let Ok(own) = listener.local_addr() else { return };
    let mut connections = 0u64;
    while let Ok((inbound, from)) = listener.accept().await {
        connections += 1;
        let seed = u64::from(target) << 32 | connections;
        let links = links.subscribe();
        tokio::spawn(async move {
            // Whoever dialed is known by the process behind the socket; an unknown dialer (it
            // exited meanwhile) meets the faults of every link into the member.
            let dialer = tokio::task::spawn_blocking(move || dialer(from.port(), own.port())).await.ok().flatten();
            // The member may be down: the connection just ends, as it would without the proxy.
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else { return };
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            let there = Route { from: dialer, to: Some(member) };
            let back = Route { from: Some(member), to: dialer };
            // Either half ending (a close, or a lost chunk) ends the connection both ways.
            tokio::select! {
                () = pump(in_read, out_write, there, links.clone(), StdRng::seed_from_u64(seed)) => {}
                () = pump(out_read, in_write, back, links, StdRng::seed_from_u64(!seed)) => {}
            }
        });
    }
}

/// One direction of a proxied connection: member indexes, `None` for an unknown dialer.
#[derive(Clone, Copy)]
struct Route {
    from: Option<usize>,
    to: Option<usize>,
}

impl Route {
    /// What this direction meets: its link, or for an unknown end the worst link it could be.
    fn link(self, Links(links): &Links) -> Link {
        let candidates: Vec<Link> = match (self.from, self.to) {
            (Some(from), Some(to)) => vec![links[from][to]],
            (None, Some(to)) => (0..links.len()).filter(|&f| f != to).map(|f| links[f][to]).collect(),
            (Some(from), None) => (0..links.len()).filter(|&t| t != from).map(|t| links[from][t]).collect(),
            (None, None) => vec![Link::Open],
        };
        candidates.into_iter().find(|l| *l != Link::Open).unwrap_or(Link::Open)
    }
}

/// Copy `from` to `to` chunk by chunk, each as its link allows, until either side closes or a
/// chunk is lost.
async fn pump(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, route: Route, mut links: watch::Receiver<Links>, mut rng: StdRng) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else { return };
        if n == 0 {
            return;
        }
        loop {
            let link = route.link(&links.borrow_and_update());
            match link {
                Link::Open => break,
                Link::Blackhole => {
                    if links.changed().await.is_err() {
                        return;
                    }
                }
                Link::Delay { base, jitter } => {
                    let spread = rng.random_range(0..=2 * jitter.as_micros() as u64);
                    let wait = (base + Duration::from_micros(spread)).saturating_sub(jitter);
                    tokio::time::sleep(wait).await;
                    break;
                }
                Link::Lossy(probability) if rng.random_bool(probability) => return,
                Link::Lossy(_) => break,
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// The member that dialed a connection to the proxy on `proxy_port` from loopback port
/// `dialer_port`: the process holding the socket bound to that port, among the processes whose
/// command line names this proxy (every member of the run has it in `--initial-cluster`),
/// known by its `--name mN`.
fn dialer(dialer_port: u16, proxy_port: u16) -> Option<usize> {
    let inode = socket_inode(dialer_port, proxy_port)?;
    let socket = format!("socket:[{inode}]");
    let needle = format!("127.0.0.1:{proxy_port}");
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(process.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !args.iter().any(|a| a.contains(&needle)) {
            continue;
        }
        let Some(name) = args.iter().position(|a| a == "--name").and_then(|i| args.get(i + 1)) else { continue };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str())) {
            return name.strip_prefix('m')?.parse().ok();
        }
    }
    None
}

/// The inode of the loopback TCP socket from `local_port` to `remote_port`, from the kernel's
/// socket tables (`/proc/net/tcp`, `/proc/net/tcp6`: local and remote addresses as hex
/// `ADDR:PORT`, the inode in the tenth column).
fn socket_inode(local_port: u16, remote_port: u16) -> Option<String> {
    let port_of = |address: &str| address.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let table = std::fs::read_to_string(table).ok()?;
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let matches = fields.len() > 9 && port_of(fields[1]) == Some(local_port) && port_of(fields[2]) == Some(remote_port);
            matches.then(|| fields[9].to_string())
        })
    })
}
