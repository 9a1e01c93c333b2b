//! Binds every configured listener and accepts connections: caps connections in
//! total and per client address (421 beyond; trusted networks only count in the
//! total), then hands each stream to a new session task. A port that cannot be bound is reported in one line and the
//! others keep serving.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ListenerConfig, ListenerRole, in_networks};
use crate::context::ServerContext;
use crate::session::{self, Connected};

mod detect;

/// A listening socket with its role.
pub struct BoundListener {
    pub listener: TcpListener,
    pub role: ListenerRole,
    pub configured: SocketAddr,
}

/// What `data_dir/run/listeners.json` records for each bound listener, so that
/// scripts and tests can find ports chosen by the system (`:0`).
#[derive(Debug, Serialize)]
pub struct ListenerInfo {
    pub addr: SocketAddr,
    pub role: ListenerRole,
    pub configured: SocketAddr,
}

/// Binds each listener; failures are logged with the port and the reason.
pub async fn bind_all(configs: &[ListenerConfig]) -> Vec<BoundListener> {
    let mut bound = Vec::new();
    for c in configs {
        match bind_tcp(c.addr).await {
            Ok(listener) => bound.push(BoundListener {
                listener,
                role: c.role,
                configured: c.addr,
            }),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        "the address is already in use by another program".to_string()
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                            .to_string()
                    }
                    _ => e.to_string(),
                };
                tracing::error!(event = "bind_failed", addr = %c.addr, role = %c.role, "cannot listen on {} ({}): {why}", c.addr, c.role);
            }
        }
    }
    bound
}

/// Binds `addr` for accepting. `[::]` (the default listeners') takes IPv4
/// clients as well, whatever the host's `bindv6only`; on a host without IPv6
/// it falls back to `0.0.0.0`, saying so once.
pub async fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match listen(addr) {
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && no_ipv6(&e) => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            tracing::warn!(event = "no_ipv6", %addr, error = %e, "IPv6 is not available on this host; listening on {v4} (IPv4 only)");
            listen(v4)
        }
        bound => bound,
    }
}

/// What tokio's `TcpListener::bind` does, with the dual-stack choice made
/// explicit (tokio's `TcpSocket` cannot set `IPV6_V6ONLY`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Errors that mean the host has no IPv6, not that the port is taken.
fn no_ipv6(e: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

impl BoundListener {
    pub fn info(&self) -> Option<ListenerInfo> {
        Some(ListenerInfo {
            addr: self.listener.local_addr().ok()?,
            role: self.role,
            configured: self.configured,
        })
    }
}

/// Connection caps shared by every listener.
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// A reload may change it (`update`).
    per_client: std::sync::RwLock<PerClient>,
}

/// The cap per client address, and who is not capped so.
struct PerClient {
    max: usize,
    /// Not capped per address: a local relay or a web application may open
    /// many connections at once (Postfix exempts mynetworks the same way).
    exempt: Vec<IpNet>,
}

/// Held for the life of a connection; releases its slots on drop.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    limits: Arc<ConnectionLimits>,
    /// The address counted against the per-client cap; `None` when exempt.
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else {
            return;
        };
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

impl ConnectionLimits {
    /// Caps of `max_total` connections and `max_per_ip` from one client
    /// address; addresses in `exempt` count only in the total.
    pub fn new(max_total: usize, max_per_ip: usize, exempt: Vec<IpNet>) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            total: Arc::new(Semaphore::new(max_total)),
            per_ip: Mutex::new(HashMap::new()),
            per_client: std::sync::RwLock::new(PerClient {
                max: max_per_ip,
                exempt,
            }),
        })
    }

    /// The per-client cap and its exemptions after a reload: new
    /// connections are admitted under them, open ones stay.
    pub fn update(&self, max_per_ip: usize, exempt: Vec<IpNet>) {
        *self.per_client.write().unwrap_or_else(|p| p.into_inner()) = PerClient {
            max: max_per_ip,
            exempt,
        };
    }

    /// A slot for a new connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let permit = Arc::clone(&self.total).try_acquire_owned().ok()?;
        let per_client = self.per_client.read().unwrap_or_else(|p| p.into_inner());
        if in_networks(&per_client.exempt, ip) {
            return Some(ConnectionSlot {
                _permit: permit,
                limits: Arc::clone(self),
                ip: None,
            });
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= per_client.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            _permit: permit,
            limits: Arc::clone(self),
            ip: Some(ip),
        })
    }
}

/// Accepts on `tcp` until `stop`, handing each connection to `on_accept`.
pub async fn accept_each(
    tcp: &TcpListener,
    stop: &CancellationToken,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            // Stopped first: a listener that stops (a reload) hands its
            // socket to its successor and must not take one more connection.
            biased;
            () = stop.cancelled() => return,
            a = tcp.accept() => a,
        };
        match accepted {
            // On a dual-stack socket an IPv4 client shows as ::ffff:a.b.c.d;
            // limits, logs and Received: lines want a.b.c.d.
            Ok((stream, peer)) => on_accept(
                stream,
                SocketAddr::new(peer.ip().to_canonical(), peer.port()),
            ),
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!(event = "accept_failed", error = %e);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts until `stop`, spawning a session per connection on `tracker`.
/// `stop` ends it (a reload that removes the listener, or shutdown); the
/// sessions it started run on.
pub async fn accept_loop(
    ctx: Arc<ServerContext>,
    bound: BoundListener,
    limits: Arc<ConnectionLimits>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    accept_each(&bound.listener, &stop, |stream, peer| {
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            return;
        };
        // Per-port counters let an admin see a port go quiet: the server-side
        // sign of a new ISP block.
        metrics::counter!("postern_connections_total", "port" => local.port().to_string(), "role" => bound.role.as_str())
            .increment(1);
        let Some(slot) = limits.admit(peer.ip()) else {
            tracing::info!(event = "rejected", peer = %peer, reason = "connection limit");
            tracker.spawn(refuse(stream, ctx.config().hostname.clone()));
            return;
        };
        let ctx = Arc::clone(&ctx);
        let role = bound.role;
        tracker.spawn(async move {
            let wait = ctx.config().tls_detect;
            let tls = detect::first_move(&stream, peer.ip(), role, wait, &ctx.plaintext_first).await;
            let connected = Connected {
                role,
                peer,
                local,
                tls,
            };
            session::run(ctx, Box::new(stream), connected).await;
            drop(slot);
        });
    })
    .await;
}

async fn refuse(mut stream: TcpStream, hostname: String) {
    let line = format!("421 4.7.0 {hostname} Error: too many connections, try again later\r\n");
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.write_all(line.as_bytes()),
    )
    .await;
}
