//! `ServerGroup`: one address served by several sockets and threads, with
//! the kernel spreading the load through SO_REUSEPORT.

use std::thread::{self, JoinHandle};

use crate::stats::{Stats, StatsHandle};
use crate::transport::{BindAddress, Inet, Transport};
use crate::{Address, Error, RequestHandler, Result, Server, ServerBuilder, ShutdownHandle};

/// Several servers on one TCP or UDP address, each with its own
/// SO_REUSEPORT socket and serving thread. The kernel spreads connections
/// (TCP) or senders (UDP) across them, so a sequential handler scales to
/// every core without locks or a shared queue.
///
/// ```
/// use std::io::{BufRead, Write};
/// use socketserver::{Request, ServerGroup, UdpServer};
///
/// let echo = |req: &mut Request<'_>| std::io::copy(&mut req.rfile, &mut req.wfile).map(drop);
/// let group = ServerGroup::spawn(2, "127.0.0.1:0", || UdpServer::builder(echo))?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// client.send_to(b"hi", group.server_address().as_inet().unwrap()).unwrap();
/// let mut buf = [0u8; 2];
/// client.recv(&mut buf).unwrap();
/// assert_eq!(&buf, b"hi");
/// group.shutdown()?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Debug)]
pub struct ServerGroup {
    address: Address,
    stops: Vec<ShutdownHandle>,
    stats: Vec<StatsHandle>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl ServerGroup {
    /// Binds `workers` servers (at least one) to `addr`, each from a fresh
    /// `builder()` with `allow_reuse_port` on, and runs `serve_forever` on
    /// each in its own thread. Port 0 is resolved by the first; the others
    /// join it.
    ///
    /// # Errors
    ///
    /// As for [`bind`](Self::bind) and [`serve`](Self::serve).
    pub fn spawn<T, H>(
        workers: usize,
        addr: impl BindAddress<Inet>,
        builder: impl FnMut() -> ServerBuilder<T, H>,
    ) -> Result<ServerGroup>
    where
        T: Transport<Family = Inet>,
        H: RequestHandler,
    {
        Self::serve(Self::bind(workers, addr, builder)?)
    }

    /// The binding half of [`spawn`](Self::spawn), for a program that has
    /// more to do between binding and serving: install signal handlers,
    /// copy the sockets for a restart, drop privileges. Then
    /// [`serve`](Self::serve) them.
    ///
    /// # Errors
    ///
    /// The first server's bind error (naming the address), or a later
    /// server's if the port cannot be shared.
    pub fn bind<T, H>(
        workers: usize,
        addr: impl BindAddress<Inet>,
        mut builder: impl FnMut() -> ServerBuilder<T, H>,
    ) -> Result<Vec<Server<T, H>>>
    where
        T: Transport<Family = Inet>,
        H: RequestHandler,
    {
        let first = builder().allow_reuse_port(true).bind(addr)?;
        let inet = first.server_address().as_inet().expect("an inet transport binds an inet address");
        let mut servers = vec![first];
        for _ in 1..workers {
            servers.push(builder().allow_reuse_port(true).bind(inet)?);
        }
        Ok(servers)
    }

    /// Serves servers already made, each on a thread of its own: several
    /// inherited sockets, say (systemd passing more than one, each from
    /// [`ServerBuilder::from_fd`](crate::ServerBuilder::from_fd)). The group's
    /// [`server_address`](Self::server_address) is the first server's.
    ///
    /// # Errors
    ///
    /// [`Error::State`] for an empty list; [`Error::Bind`] if a serving
    /// thread cannot start (servers already started are stopped).
    pub fn serve<T: Transport, H: RequestHandler>(servers: Vec<Server<T, H>>) -> Result<ServerGroup> {
        let Some(first) = servers.first() else {
            return Err(Error::State { addr: Address::Unnamed, state: "an empty group: no server to serve" });
        };
        let address = first.server_address().clone();
        let mut group = ServerGroup { address, stops: Vec::new(), stats: Vec::new(), threads: Vec::new() };
        for (i, mut server) in servers.into_iter().enumerate() {
            group.stops.push(server.shutdown_handle());
            group.stats.push(server.stats_handle());
            let spawned = thread::Builder::new()
                .name(format!("socketserver-group-{i}"))
                .spawn(move || server.serve_forever())
                .map_err(|source| Error::Bind {
                    action: "start a serving thread for",
                    addr: group.address.clone(),
                    source,
                });
            match spawned {
                Ok(thread) => group.threads.push(thread),
                Err(e) => {
                    group.stop_all();
                    return Err(e);
                }
            }
        }
        Ok(group)
    }

    /// The address every server of the group is bound to.
    pub fn server_address(&self) -> &Address {
        &self.address
    }

    /// One handle per server; a signal handler asks each to stop.
    pub fn shutdown_handles(&self) -> &[ShutdownHandle] {
        &self.stops
    }

    /// The counters of every server of the group, added up.
    pub fn stats(&self) -> Stats {
        self.stats.iter().map(StatsHandle::get).fold(Stats::default(), Stats::plus)
    }

    /// Waits until every server has stopped (after its handle was used) and
    /// returns the first error any of them returned.
    ///
    /// # Errors
    ///
    /// The first error a server's `serve_forever` returned.
    pub fn join(mut self) -> Result<()> {
        self.join_all()
    }

    /// Stops every server, waits for them, and returns the first error.
    ///
    /// # Errors
    ///
    /// The first error a server's `serve_forever` returned.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_all();
        self.join_all()
    }

    fn stop_all(&self) {
        for stop in &self.stops {
            stop.request_shutdown();
        }
    }

    fn join_all(&mut self) -> Result<()> {
        let mut first_error = Ok(());
        for thread in self.threads.drain(..) {
            let result = thread.join().unwrap_or_else(|_| {
                log::error!("a serving thread of the group on {} panicked", self.address);
                Ok(())
            });
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    }
}

impl Drop for ServerGroup {
    fn drop(&mut self) {
        self.stop_all();
        let _ = self.join_all();
    }
}
