//! `prime serve`: its flags, and serving until SIGINT/SIGTERM. ADDR is
//! HOST:PORT or a path, or `fd:N` for a socket the process inherited at fd
//! N (from a supervisor, or any launcher that passes fds).

use std::process::ExitCode;
use std::time::Duration;

use socketserver::transport::take_inherited_fd;
use socketserver::{
    AnyServer, Dispatch, Endpoint, ServerBuilder, ServerGroup, TcpServer, UdpServer, UnixDatagramServer,
    UnixStreamServer, privileges,
};

use crate::cli::{FramingKind, ServeArgs};
use crate::prime::PrimeService;
use crate::{TransportKind, failure, parse, run, usage_error};

/// `--drain-timeout` when none is given.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// Options of `prime serve`, from its flags.
#[derive(Debug, Default)]
pub struct ServeOptions {
    dispatch: Option<Dispatch>,
    max_connections: Option<usize>,
    /// `--per-client-*` and `--client-prefix-v6`.
    per_client: Option<socketserver::PerClient>,
    max_digits: Option<usize>,
    timeout: Option<Duration>,
    connection_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
    batch: Option<usize>,
    reuseport: Option<usize>,
    public: bool,
    user: Option<String>,
    group: Option<String>,
    pub(crate) pid_file: Option<std::path::PathBuf>,
    access_log: bool,
    /// `--framing lines`: each line read in the loop, a worker held only
    /// while it is answered.
    framing: bool,
    /// `--proxy-protocol`, and the `--trusted-proxy` networks.
    #[cfg(feature = "proxy-protocol")]
    proxy: Option<Vec<socketserver::proxy::IpNet>>,
    /// `--metrics ADDR`: where Prometheus scrapes.
    #[cfg(feature = "metrics")]
    metrics: Option<String>,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`, read into a config.
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// KIND, ADDR and the options, once the flags that depend on KIND (or on
/// each other beyond what clap checks) are found to go together.
pub fn parse_serve(args: ServeArgs) -> Result<(TransportKind, String, ServeOptions), String> {
    let kind = args.kind;
    let datagrams = matches!(kind, TransportKind::Udp | TransportKind::UnixDatagram);
    let dispatch = match (args.threads, args.workers, args.fork) {
        (true, ..) => Some(Dispatch::threads()),
        (_, Some(n), _) => Some(Dispatch::pool(n)),
        (.., true) => Some(Dispatch::fork()),
        _ => None,
    };
    let framing = args.framing == Some(FramingKind::Lines);
    let per_client = per_client(&args);
    if framing && datagrams {
        return Err("--framing needs tcp or unix-stream (a datagram is a message already)".into());
    }
    if framing && args.fork {
        return Err("--framing with --fork: a child cannot hand the connection back; use --workers N".into());
    }
    Ok((
        kind,
        args.addr,
        ServeOptions {
            #[cfg(feature = "tls")]
            tls: tls_config(datagrams, [args.tls_cert, args.tls_key, args.tls_client_ca])?,
            #[cfg(feature = "metrics")]
            metrics: args.metrics,
            #[cfg(feature = "proxy-protocol")]
            proxy: trusted_proxies(args.proxy_protocol, args.trusted_proxy),
            dispatch,
            max_connections: args.max_connections,
            per_client,
            max_digits: args.max_digits,
            timeout: args.timeout,
            connection_timeout: args.connection_timeout,
            drain_timeout: args.drain_timeout,
            batch: args.batch,
            reuseport: args.reuseport,
            public: args.public,
            user: args.user,
            group: args.group,
            pid_file: args.pid_file,
            access_log: args.access_log,
            framing,
        },
    ))
}

/// The per-client limits the flags ask for; the library refuses settings
/// that cannot work (naming them) when the server is built.
fn per_client(args: &ServeArgs) -> Option<socketserver::PerClient> {
    if args.per_client_connections.is_none() && args.per_client_rate.is_none() && args.client_prefix_v6.is_none() {
        return None;
    }
    let mut limits = socketserver::PerClient::new();
    if let Some(n) = args.per_client_connections {
        limits = limits.connections(n);
    }
    if let Some(rate) = args.per_client_rate {
        // One second's worth by default; the library refuses a rate it cannot use.
        let burst = args.per_client_burst.unwrap_or(if rate.is_finite() && rate >= 1.0 {
            rate.ceil().min(f64::from(u32::MAX)) as u32
        } else {
            1
        });
        limits = limits.rate(rate, burst);
    }
    if let Some(bits) = args.client_prefix_v6 {
        limits = limits.ipv6_prefix(bits);
    }
    Some(limits)
}

/// The TLS config the `--tls-*` flags name, read from their files.
#[cfg(feature = "tls")]
fn tls_config(
    datagrams: bool,
    [cert, key, client_ca]: [Option<std::path::PathBuf>; 3],
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
    if datagrams {
        return Err("--tls-cert needs tcp or unix-stream (TLS runs over streams)".into());
    }
    let pem = socketserver::tls::ServerPem::files(cert, key).provider(crate::tls::provider());
    let pem = match client_ca {
        Some(ca) => pem.client_ca_file(ca),
        None => pem,
    };
    pem.build().map(Some).map_err(|e| format!("--tls-cert: {e}"))
}

/// The proxies `--proxy-protocol` trusts when no `--trusted-proxy` is given.
#[cfg(feature = "proxy-protocol")]
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// `--proxy-protocol`'s trusted networks: those given, else loopback.
#[cfg(feature = "proxy-protocol")]
fn trusted_proxies(on: bool, given: Vec<socketserver::proxy::IpNet>) -> Option<Vec<socketserver::proxy::IpNet>> {
    match (on, given.is_empty()) {
        (false, _) => None,
        (true, false) => Some(given),
        (true, true) => Some(LOOPBACK.iter().map(|net| net.parse().expect("a valid network")).collect()),
    }
}

pub fn serve((kind, addr, options): (TransportKind, String, ServeOptions)) -> Result<(), ExitCode> {
    let handler =
        PrimeService { max_digits: options.max_digits.unwrap_or(parse::MAX_DIGITS), access_log: options.access_log };
    // Looked up while names still resolve; dropped to once every socket is bound.
    let ids = match &options.user {
        Some(user) => Some(privileges::lookup(user, options.group.as_deref()).map_err(failure)?),
        None => None,
    };
    // Before any server is built: each registers its counters with the
    // recorder installed then.
    #[cfg(feature = "metrics")]
    if let Some(at) = &options.metrics {
        crate::metrics::serve(at).map_err(failure)?;
    }
    let run = run::Run::new(ids, &options, &addr);
    if let Some(fds) = handed_over(&addr, options.reuseport.is_some())? {
        let servers = fds.into_iter().map(|fd| inherited(kind, fd, handler.clone(), &options));
        return run.serve(servers.collect::<Result<_, _>>().map_err(usage_error)?);
    }
    let addr = if options.public { public_address(kind, &addr)? } else { addr };
    let endpoint = kind.endpoint(&addr).map_err(|e| usage_error(e.to_string()))?;
    let servers = match (options.reuseport, &endpoint) {
        (Some(n), Endpoint::Tcp(addr)) => {
            ServerGroup::bind(n, addr.as_str(), || configure(TcpServer::builder(handler.clone()), &options))
                .map(|servers| servers.into_iter().map(AnyServer::Tcp).collect())
        }
        (Some(n), Endpoint::Udp(addr)) => {
            ServerGroup::bind(n, addr.as_str(), || configure(UdpServer::builder(handler.clone()), &options))
                .map(|servers| servers.into_iter().map(AnyServer::Udp).collect())
        }
        (Some(_), _) => return Err(usage_error("--reuseport needs tcp or udp")),
        (None, _) => {
            let mut builder = configure(AnyServer::builder(handler), &options);
            if let Some(ids) = ids {
                builder = builder.socket_owner(ids);
            }
            builder.bind(&endpoint).map(|server| vec![server])
        }
    };
    // A setting the library refuses is a usage error, as clap's are.
    run.serve(
        servers
            .map_err(|e| if matches!(e, socketserver::Error::Config { .. }) { usage_error(e) } else { failure(e) })?,
    )
}

/// The sockets ADDR names if they are ones this process was handed:
/// `fd:N`, or (feature `systemd`) `systemd[:NAME]`; with `--reuseport`
/// (`group`), every socket passed under that name (a restart of a group
/// passes one per server).
fn handed_over(addr: &str, group: bool) -> Result<Option<Vec<std::os::fd::OwnedFd>>, ExitCode> {
    if let Some(fd) = addr.strip_prefix("fd:") {
        if group {
            return Err(usage_error("--reuseport needs HOST:PORT (or systemd[:NAME]), not fd:N"));
        }
        let fd = fd.parse().map_err(|_| usage_error(format!("{addr:?}: fd:N needs a number")))?;
        return take_inherited_fd(fd).map(|fd| Some(vec![fd])).map_err(usage_error);
    }
    #[cfg(feature = "systemd")]
    if let Some(name) = addr.strip_prefix("systemd") {
        return activated_sockets(name.strip_prefix(':'), group).map(Some).map_err(usage_error);
    }
    Ok(None)
}

/// The socket-activated sockets: the first passed, or the one named NAME;
/// with `all`, every one (named NAME).
#[cfg(feature = "systemd")]
fn activated_sockets(name: Option<&str>, all: bool) -> socketserver::Result<Vec<std::os::fd::OwnedFd>> {
    let passed = socketserver::systemd::listen_fds()?;
    let wanted = passed.into_iter().filter(|(_, n)| name.is_none_or(|name| n == name)).map(|(fd, _)| fd);
    let found: Vec<_> = if all { wanted.collect() } else { wanted.take(1).collect() };
    if found.is_empty() {
        return Err(socketserver::Error::Inherited {
            fd: 3,
            problem: format!(
                "no socket {} was passed (LISTEN_FDS)",
                name.map_or("at all".into(), |n| format!("named {n:?}"))
            ),
        });
    }
    Ok(found)
}

/// The server for an inherited socket, checked against KIND.
fn inherited(
    kind: TransportKind,
    fd: std::os::fd::OwnedFd,
    handler: PrimeService,
    options: &ServeOptions,
) -> socketserver::Result<AnyServer<PrimeService>> {
    Ok(match kind {
        TransportKind::Tcp => AnyServer::Tcp(configure(TcpServer::builder(handler), options).from_fd(fd)?),
        TransportKind::Udp => AnyServer::Udp(configure(UdpServer::builder(handler), options).from_fd(fd)?),
        TransportKind::UnixStream => {
            AnyServer::UnixStream(configure(UnixStreamServer::builder(handler), options).from_fd(fd)?)
        }
        TransportKind::UnixDatagram => {
            AnyServer::UnixDatagram(configure(UnixDatagramServer::builder(handler), options).from_fd(fd)?)
        }
    })
}

fn configure<T>(builder: ServerBuilder<T, PrimeService>, options: &ServeOptions) -> ServerBuilder<T, PrimeService> {
    // Clients speak first in this protocol, so a silent connection can wait
    // for its first line in the serving loop instead of in a handler.
    let builder = builder
        .handler_timeout(options.timeout)
        .idle_timeout(options.timeout)
        .connection_timeout(options.connection_timeout)
        .drain_timeout(Some(options.drain_timeout.unwrap_or(DEFAULT_DRAIN)))
        .dispatch(options.dispatch.clone().unwrap_or_default());
    // Tells systemd (or a restarting predecessor) READY=1 and the rest,
    // when NOTIFY_SOCKET says where; nothing otherwise.
    #[cfg(feature = "systemd")]
    let builder = builder.systemd_notify();
    #[cfg(feature = "tls")]
    let builder = match &options.tls {
        Some(config) => builder.tls(std::sync::Arc::clone(config)),
        None => builder,
    };
    #[cfg(feature = "proxy-protocol")]
    let builder = match &options.proxy {
        Some(trusted) => {
            let settings = trusted.iter().fold(socketserver::proxy::ProxyProtocol::required(), |s, net| s.trust(*net));
            // A balancer on this host reaches a Unix socket through its file's permissions.
            builder.proxy_protocol(settings.trust_unix_peers(true))
        }
        None => builder,
    };
    // A line of the longest number (digits, an underscore between each
    // two, some whitespace) is one message; a longer line (padding, or
    // garbage) comes in pieces, read and answered as the unframed handler
    // reads and answers it, holding at most this much per connection.
    let max_line = 2 * options.max_digits.unwrap_or(parse::MAX_DIGITS) + 1024;
    let framing = socketserver::Framing::lines(max_line).in_pieces();
    let builder = if options.framing { builder.framing(framing) } else { builder };
    let builder = match options.batch {
        Some(n) => builder.datagram_batch(n),
        None => builder,
    };
    let builder = match &options.per_client {
        Some(limits) => builder.per_client(limits.clone()),
        None => builder,
    };
    match options.max_connections {
        Some(n) => builder.max_connections(n),
        None => builder,
    }
}

/// `--public`: the unspecified IPv6 address (dual-stack, so IPv4 too) on
/// ADDR's port, announced with a warning naming where it can be reached.
fn public_address(kind: TransportKind, addr: &str) -> Result<String, ExitCode> {
    if matches!(kind, TransportKind::UnixStream | TransportKind::UnixDatagram) {
        return Err(usage_error("--public needs tcp or udp"));
    }
    let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    let port = port.ok_or_else(|| usage_error(format!("--public: no port in {addr:?}")))?;
    let reachable = match socketserver::host::host_addresses() {
        Ok(addresses) => addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        Err(e) => format!("(unknown: {e})"),
    };
    eprintln!(
        "warning: --public: listening on every address of this host, IPv4 and IPv6, port {port}; \
         reachable beyond loopback, at {reachable} and any other address this host has"
    );
    Ok(format!("[::]:{port}"))
}
