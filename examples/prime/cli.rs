//! The command line, with clap: help per command, suggestions for a typo,
//! and exit status 2 with clap's usage for anything it cannot take. Values
//! are checked here as far as one flag can tell; what needs several (KIND
//! and a flag together) is checked in `serve.rs`, with the same errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// The largest `--max-digits`: a test of a number this long already takes
/// minutes of CPU.
const MAX_MAX_DIGITS: usize = 1_000_000;

/// The prime service: "N\n" is answered T (prime), F (not prime) or E (not
/// an integer), by one handler served over TCP, UDP, Unix stream and Unix
/// datagram sockets. Without a command: a demo over every transport.
#[derive(Parser, Debug)]
#[command(name = "prime", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve until SIGINT or SIGTERM (a second one cuts the drain short)
    Serve(Box<ServeArgs>),
    /// Ask a server about each N; print "N ANSWER" per number
    Ask(AskArgs),
    /// Write a CA, and a server and a client certificate it signed, as PEM
    /// files into DIR (for serve --tls-cert and ask --tls)
    #[cfg(feature = "tls")]
    Certs {
        /// Where the files go (made if missing)
        dir: PathBuf,
    },
}

/// The transports.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Udp,
    UnixStream,
    UnixDatagram,
}

/// The framings `--framing` offers.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingKind {
    /// One request per line
    Lines,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The transport
    pub kind: TransportKind,
    /// HOST:PORT (port 0 picks one), a socket path, or fd:N (the socket this
    /// process inherited as fd N); with the systemd feature also systemd or
    /// systemd:NAME (a socket-activated socket; SIGHUP then restarts on it)
    pub addr: String,
    /// A thread per request (default: one request at a time)
    #[arg(long, group = "dispatch")]
    pub threads: bool,
    /// A pool of N worker threads
    #[arg(long, value_name = "N", group = "dispatch", value_parser = |s: &str| count(s, usize::MAX))]
    pub workers: Option<usize>,
    /// A child process per request
    #[arg(long, group = "dispatch")]
    pub fork: bool,
    /// Stream servers: at most N connections open at once
    #[arg(long, value_name = "N", value_parser = |s: &str| count(s, usize::MAX))]
    pub max_connections: Option<usize>,
    /// Stream servers: at most N open connections per client (its IPv4
    /// address, IPv6 prefix, or Unix uid); more are closed at once
    #[arg(long, value_name = "N")]
    pub per_client_connections: Option<u32>,
    /// At most R requests a second per client (a datagram, a connection, a
    /// framed line): over it a datagram is dropped, a connection closed, a
    /// framed line delayed
    #[arg(long, value_name = "R")]
    pub per_client_rate: Option<f64>,
    /// With --per-client-rate: bursts of up to B requests (default: R,
    /// rounded up)
    #[arg(long, value_name = "B", requires = "per_client_rate")]
    pub per_client_burst: Option<u32>,
    /// With per-client limits: an IPv6 client is its address's first LEN
    /// bits (default 64)
    #[arg(long, value_name = "LEN")]
    pub client_prefix_v6: Option<u8>,
    /// tcp/udp: listen on every address of this host ([::], IPv4 too), on
    /// ADDR's port, instead of ADDR's host
    #[arg(long)]
    pub public: bool,
    /// tcp/udp: N sockets on one port (SO_REUSEPORT), a thread each
    #[arg(long, value_name = "N", value_parser = |s: &str| count(s, 1024))]
    pub reuseport: Option<usize>,
    /// Datagrams: take up to N per recvmmsg/sendmmsg (Linux; default 32 for
    /// udp, 1 for unix-datagram; 1 answers each before the next)
    #[arg(long, value_name = "N", value_parser = |s: &str| count(s, 1024))]
    pub batch: Option<usize>,
    /// Longest number read, in digits (default 4300, Python's int() limit);
    /// longer ones are answered E. A test costs about the cube of N
    #[arg(long, value_name = "N", value_parser = |s: &str| count(s, MAX_MAX_DIGITS))]
    pub max_digits: Option<usize>,
    /// Close a connection silent this long; bound each read and write
    #[arg(long, value_name = "SECS", value_parser = positive_seconds, allow_negative_numbers = true)]
    pub timeout: Option<Duration>,
    /// Close any connection this long after it opened
    #[arg(long, value_name = "SECS", value_parser = positive_seconds, allow_negative_numbers = true)]
    pub connection_timeout: Option<Duration>,
    /// On SIGINT/SIGTERM, let running requests finish this long, then cut
    /// them (default 10)
    #[arg(long, value_name = "SECS", value_parser = seconds, allow_negative_numbers = true)]
    pub drain_timeout: Option<Duration>,
    /// Once every socket is bound, serve as NAME (a Unix socket file is given
    /// to NAME first); needs root
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// With --user: serve as group NAME instead of NAME's own
    #[arg(long, value_name = "NAME", requires = "user")]
    pub group: Option<String>,
    /// Write this process's pid to PATH once it serves
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// A line per answer on stderr: the client's address as the handler sees
    /// it, the transport, the answer
    #[arg(long)]
    pub access_log: bool,
    /// tcp/unix-stream: read each request in the serving loop and hand it to
    /// a worker alone, so a keep-alive client holds a worker only while it is
    /// answered (not with --fork)
    #[arg(long, value_name = "FRAMING")]
    pub framing: Option<FramingKind>,
    /// Behind a load balancer: every connection or datagram from a trusted
    /// proxy starts with a PROXY header (v1 or v2) naming the real client
    #[cfg(feature = "proxy-protocol")]
    #[arg(long)]
    pub proxy_protocol: bool,
    /// With --proxy-protocol: believe headers only from CIDR (repeatable;
    /// default 127.0.0.0/8 and ::1/128; Unix peers are always trusted)
    #[cfg(feature = "proxy-protocol")]
    #[arg(long, value_name = "CIDR", requires = "proxy_protocol", value_parser = network)]
    pub trusted_proxy: Vec<socketserver::proxy::IpNet>,
    /// Serve the server's counters for Prometheus at http://ADDR/metrics
    /// (HOST:PORT; port 0 picks one, named on stderr)
    #[cfg(feature = "metrics")]
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// tcp/unix-stream: serve TLS with this certificate chain (PEM)
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// With --tls-cert: its private key (PEM)
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-cert: require client certificates from this CA (PEM)
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AskArgs {
    /// The transport
    pub kind: TransportKind,
    /// Where the server listens: HOST:PORT or a socket path
    pub addr: String,
    /// The numbers to ask about (anything: what is not an integer is answered E)
    #[arg(required = true, allow_hyphen_values = true)]
    pub numbers: Vec<String>,
    /// Speak TLS (tcp, unix-stream), checking the server's certificate
    /// against --ca
    #[cfg(feature = "tls")]
    #[arg(long, requires = "ca")]
    pub tls: bool,
    /// The CA that signed the server's certificate (PEM)
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Present this client certificate (PEM), with --key
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// Reports what clap could not check of `serve` (flags that go together
/// with KIND, an address that cannot be one) as clap reports its own
/// errors, with the command's usage; the exit status is 2.
pub fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    let mut cli = Cli::command();
    cli.build();
    let error = match cli.find_subcommand_mut("serve") {
        Some(serve) => serve.error(ErrorKind::ArgumentConflict, message),
        None => cli.error(ErrorKind::ArgumentConflict, message),
    };
    let _ = error.print();
    ExitCode::from(2)
}

fn seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value.parse().map_err(|_| "not a number of seconds".to_string())?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Seconds, more than zero: a zero timeout would close everything at once.
fn positive_seconds(value: &str) -> Result<Duration, String> {
    match seconds(value)? {
        d if d.is_zero() => Err("must be more than 0 seconds".into()),
        d => Ok(d),
    }
}

/// A count from 1 to `max`.
fn count(value: &str, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n @ 1..) if n <= max => Ok(n),
        Ok(_) => Err(format!("out of range (1 to {max})")),
        Err(_) => Err(format!("not a whole number from 1 to {max}")),
    }
}

#[cfg(feature = "proxy-protocol")]
fn network(value: &str) -> Result<socketserver::proxy::IpNet, String> {
    value.parse().map_err(|e| format!("{e} (want ADDRESS/PREFIX)"))
}
