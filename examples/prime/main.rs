//! The prime service: one handler served over TCP, UDP, Unix stream and Unix
//! datagram sockets.
//!
//! ```text
//! prime                          demo: serve and query every transport, print a table
//! prime serve KIND ADDR [FLAGS]  serve until SIGINT/SIGTERM
//! prime ask KIND ADDR N...       query a server, print "N ANSWER" per number
//! ```
//! KIND is tcp, udp, unix-stream or unix-datagram; ADDR is HOST:PORT or a socket path.

mod cli;
mod client;
#[cfg(feature = "metrics")]
mod metrics;
mod parse;
mod pidfile;
mod primality;
mod prime;
mod run;
mod serve;
#[cfg(feature = "tls")]
mod tls;

use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use socketserver::{AnyServer, Endpoint, ShutdownHandle};

use cli::{Cli, Command};
pub use cli::{TransportKind, usage_error};
use prime::PrimeService;

/// The numbers the seed's client sends, with the answers it expects.
const SEED: [(&str, char); 8] = [
    ("4j", 'E'),
    ("4", 'F'),
    ("5", 'T'),
    ("-5", 'F'),
    ("17", 'T'),
    ("29", 'T'),
    ("1125899906842624", 'F'),
    ("1125899906842623", 'F'),
];

/// How long the client waits for any one answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

impl TransportKind {
    /// The endpoint for `addr` on this transport (KIND is its scheme).
    fn endpoint(self, addr: &str) -> socketserver::Result<Endpoint> {
        format!("{}:{addr}", self.name()).parse()
    }

    fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Udp => "udp",
            TransportKind::UnixStream => "unix-stream",
            TransportKind::UnixDatagram => "unix-datagram",
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match Cli::parse().command {
        None => demo(),
        Some(Command::Serve(args)) => serve::parse_serve(*args).map_err(usage_error).and_then(serve::serve),
        Some(Command::Ask(args)) => ask(args),
        #[cfg(feature = "tls")]
        Some(Command::Certs { dir }) => certs(&dir),
    };
    result.err().unwrap_or(ExitCode::SUCCESS)
}

fn failure(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("prime: {message}");
    ExitCode::FAILURE
}

/// `prime ask`: each number's answer, on a line of its own.
fn ask(args: cli::AskArgs) -> Result<(), ExitCode> {
    #[cfg(feature = "tls")]
    let security = ask_security(&args)?;
    #[cfg(not(feature = "tls"))]
    let security = client::Security::default();
    let answers = client::ask(args.kind, &args.addr, &args.numbers, ASK_TIMEOUT, &security).map_err(failure)?;
    for (n, answer) in args.numbers.iter().zip(answers) {
        println!("{n} {answer}");
    }
    Ok(())
}

/// How `ask` speaks: `--tls` with `--ca`, and a client certificate with
/// `--cert` and `--key`.
#[cfg(feature = "tls")]
fn ask_security(args: &cli::AskArgs) -> Result<client::Security, ExitCode> {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| failure(format!("{}: {e}", path.display())));
    let Some(ca) = args.ca.as_deref().filter(|_| args.tls) else { return Ok(client::Security::default()) };
    let ca = read(ca)?;
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    let identity = identity.as_ref().map(|(cert, key)| (&cert[..], &key[..]));
    Ok(client::Security { tls: Some(tls::client_config(&ca, identity).map_err(failure)?) })
}

/// `prime certs DIR`: certificates for trying TLS (`serve --tls-cert
/// DIR/server.pem --tls-key DIR/server.key`, `ask --tls --ca DIR/ca.pem`).
#[cfg(feature = "tls")]
fn certs(dir: &std::path::Path) -> Result<(), ExitCode> {
    let written = tls::Pki::generate().and_then(|pki| pki.write_to(dir)).map_err(failure)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// A server of the demo, running on its own thread.
struct DemoServer {
    label: &'static str,
    kind: TransportKind,
    address: String,
    security: client::Security,
    stop: ShutdownHandle,
    thread: JoinHandle<socketserver::Result<()>>,
}

fn start(kind: TransportKind, addr: &str) -> Result<DemoServer, ExitCode> {
    let endpoint = kind.endpoint(addr).map_err(failure)?;
    let server = AnyServer::bind(&endpoint, PrimeService::default()).map_err(failure)?;
    Ok(run(kind.name(), kind, server, client::Security::default()))
}

fn run(
    label: &'static str,
    kind: TransportKind,
    mut server: AnyServer<PrimeService>,
    security: client::Security,
) -> DemoServer {
    let address = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.serve_forever());
    DemoServer { label, kind, address, security, stop, thread }
}

/// The TLS column (feature `tls`): TCP with a certificate made at start,
/// asked by a client that trusts only the CA made with it.
#[cfg(feature = "tls")]
fn start_tls() -> Result<DemoServer, ExitCode> {
    let pki = tls::Pki::generate().map_err(failure)?;
    let config = socketserver::tls::ServerPem::bytes(pki.server_cert.clone(), pki.server_key.clone())
        .provider(tls::provider())
        .build()
        .map_err(failure)?;
    let server =
        socketserver::TcpServer::builder(PrimeService::default()).tls(config).bind("127.0.0.1:0").map_err(failure)?;
    let security = client::Security { tls: Some(tls::client_config(pki.ca.as_bytes(), None).map_err(failure)?) };
    Ok(run("tls (tcp)", TransportKind::Tcp, AnyServer::Tcp(server), security))
}

fn demo() -> Result<(), ExitCode> {
    let dir = tempfile::Builder::new().prefix("prime-demo").tempdir().map_err(failure)?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let servers = vec![
        start(TransportKind::Tcp, "127.0.0.1:0")?,
        start(TransportKind::Udp, "127.0.0.1:0")?,
        start(TransportKind::UnixStream, &path("prime-stream.sock"))?,
        start(TransportKind::UnixDatagram, &path("prime-dgram.sock"))?,
        #[cfg(feature = "tls")]
        start_tls()?,
    ];
    println!("The prime service, one handler on four transports:");
    for s in &servers {
        println!("  {:<14} {}", s.label, s.address);
    }
    println!();

    let numbers: Vec<String> = SEED.iter().map(|(n, _)| n.to_string()).collect();
    let columns: Vec<Result<Vec<char>, String>> =
        servers.iter().map(|s| client::ask(s.kind, &s.address, &numbers, ASK_TIMEOUT, &s.security)).collect();

    print!("{:<18}", "number");
    for s in &servers {
        print!(" {:<14}", s.label);
    }
    println!(" expected");
    let mut wrong = 0;
    for (row, (n, expected)) in SEED.iter().enumerate() {
        print!("{n:<18}");
        for column in &columns {
            let got = column.as_ref().ok().map(|answers| answers[row]);
            wrong += usize::from(got != Some(*expected));
            let cell = got.map_or("-".to_string(), |c| c.to_string());
            let mark = if got == Some(*expected) { "" } else { " (wrong)" };
            print!(" {:<14}", format!("{cell}{mark}"));
        }
        println!(" {expected}");
    }
    for (server, column) in servers.iter().zip(&columns) {
        if let Err(e) = column {
            eprintln!("{}: {e}", server.label);
        }
    }
    for server in servers {
        server.stop.shutdown();
        server.thread.join().map_err(|_| failure("a server thread panicked"))?.map_err(failure)?;
    }
    let total = SEED.len() * columns.len();
    println!("\n{} of {total} answers correct", total - wrong);
    if wrong == 0 { Ok(()) } else { Err(ExitCode::FAILURE) }
}
