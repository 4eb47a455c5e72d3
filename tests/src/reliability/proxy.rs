//! Loopback TCP proxies in front of the members' peer ports, and the faults their traffic meets.
//!
//! Each member's peers reach it through a proxy of its own (the proxy is the member's advertised
//! peer URL). A proxy finds which member dialed each connection (the process owning the other
//! end of the socket, see [`dialer`]), so every byte it carries belongs to one directed link
//! `from → to`: what the dialer sends is `dialer → member`, the answers `member → dialer`. A
//! [`Network`] holds what each directed link meets — open, a blackhole (nothing passes until it
//! lifts, as when a partition heals and TCP delivers what was held), a delay on every chunk, or
//! losses (a lost chunk breaks its connection, which the dialer must notice and re-dial).
//!
//! The proxies run on a runtime of their own: the network must carry the members' traffic
//! whatever the harness's tasks do. A harness that blocks its worker threads (waiting for a
//! member to start, running etcdctl) would otherwise stall the very links that member needs, and
//! under load that held a joining member unready, or a member cut off, for a minute.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{OnceCell, Semaphore, watch};

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
    ports: Vec<u16>,
    /// Runs the proxies; shut down (without waiting) when the network is dropped.
    runtime: Option<Runtime>,
}

impl Network {
    /// A proxy for each of `targets` (the members' peer ports, in member order), every link open.
    pub fn start(targets: &[u16]) -> Result<Network> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("network").enable_all().build()?;
        let open = Links(vec![vec![Link::Open; targets.len()]; targets.len()]);
        let links = Arc::new(watch::Sender::new(open));
        let mut ports = Vec::new();
        for (member, &target) in targets.iter().enumerate() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            ports.push(listener.local_addr()?.port());
            let listener = {
                let _entered = runtime.enter();
                TcpListener::from_std(listener)?
            };
            runtime.spawn(accept(listener, member, target, links.clone()));
        }
        Ok(Network { links, ports, runtime: Some(runtime) })
    }

    /// The port the peers of member `member` dial.
    pub fn port(&self, member: usize) -> u16 {
        self.ports[member]
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

impl Drop for Network {
    fn drop(&mut self) {
        // Dropped from async code too, where waiting for the proxies' tasks is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, member: usize, target: u16, links: Arc<watch::Sender<Links>>) {
    let Ok(own) = listener.local_addr() else { return };
    let lookups = Arc::new(Semaphore::new(LOOKUPS));
    let mut connections = 0u64;
    loop {
        let (inbound, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, or a connection reset before it was taken: the proxy
            // goes on (a proxy that stopped would be a partition nobody asked for).
            Err(e) => {
                eprintln!("the proxy to member {member} could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        connections += 1;
        let seed = u64::from(target) << 32 | connections;
        let links = links.subscribe();
        let dialer = Arc::new(Dialer { dialer_port: from.port(), proxy_port: own.port(), found: OnceCell::new(), lookups: lookups.clone() });
        tokio::spawn(async move {
            // The member may be down: the connection just ends, as it would without the proxy.
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else { return };
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            let there = Route { member, into_member: true, dialer: dialer.clone() };
            let back = Route { member, into_member: false, dialer };
            // Either half ending (a close, or a lost chunk) ends the connection both ways.
            tokio::select! {
                () = pump(in_read, out_write, there, links.clone(), StdRng::seed_from_u64(seed)) => {}
                () = pump(out_read, in_write, back, links, StdRng::seed_from_u64(!seed)) => {}
            }
        });
    }
}

/// How many dialer lookups a proxy runs at once: each reads the kernel's socket table, which a
/// busy machine fills with thousands of sockets.
const LOOKUPS: usize = 2;

/// Who dialed one proxied connection: looked up once, and only when a fault makes it matter.
/// While every link is open (most of a run) no connection needs it; a lookup per connection
/// made the re-dials of a slowed link cost a scan of the socket table each, which under load
/// starved the proxies past the fault.
struct Dialer {
    dialer_port: u16,
    proxy_port: u16,
    found: OnceCell<Option<usize>>,
    lookups: Arc<Semaphore>,
}

impl Dialer {
    /// The dialing member, `None` if it is unknown (it exited meanwhile).
    async fn member(&self) -> Option<usize> {
        let (dialer_port, proxy_port) = (self.dialer_port, self.proxy_port);
        *self
            .found
            .get_or_init(|| async {
                let _permit = self.lookups.acquire().await.ok();
                tokio::task::spawn_blocking(move || dialer(dialer_port, proxy_port)).await.ok().flatten()
            })
            .await
    }
}

/// One direction of a proxied connection to `member`: from its dialer into it, or back.
struct Route {
    member: usize,
    into_member: bool,
    dialer: Arc<Dialer>,
}

impl Route {
    /// What this direction meets now: its link, or for an unknown dialer the worst link it
    /// could be.
    async fn link(&self, links: &mut watch::Receiver<Links>) -> Link {
        let current = {
            let current = links.borrow_and_update();
            if current.0.iter().flatten().all(|l| *l == Link::Open) {
                return Link::Open;
            }
            current.clone()
        };
        let Links(links) = current;
        let member = self.member;
        let others = (0..links.len()).filter(|&o| o != member);
        let candidates: Vec<Link> = match (self.dialer.member().await, self.into_member) {
            (Some(dialer), true) => vec![links[dialer][member]],
            (Some(dialer), false) => vec![links[member][dialer]],
            (None, true) => others.map(|o| links[o][member]).collect(),
            (None, false) => others.map(|o| links[member][o]).collect(),
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
            match route.link(&mut links).await {
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
    // Compared as the table prints them (upper-case hex), without parsing every line: the table
    // can hold thousands of sockets.
    let (local, remote) = (format!(":{local_port:04X}"), format!(":{remote_port:04X}"));
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let table = std::fs::read_to_string(table).ok()?;
        table.lines().skip(1).find_map(|line| {
            let mut fields = line.split_ascii_whitespace().skip(1);
            let matches = fields.next()?.ends_with(&local) && fields.next()?.ends_with(&remote);
            matches.then(|| fields.nth(6).map(str::to_string)).flatten()
        })
    })
}
