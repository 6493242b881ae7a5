//! TLS for the compare bench (feature `tls`): certificates made once per
//! run and handed to the server processes through `COMPARE_TLS_DIR`; this
//! crate's TLS server, a hand-written std + rustls loop with the same
//! crypto provider (ring), and a load of one handshake per request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, ServerConnection, StreamOwned};
use socketserver::{Dispatch, TcpServer};

use crate::load::Stats;
use crate::pki;
use crate::prime::{PrimeService, answer};

/// Where the server processes find `server.pem` and `server.key`.
pub const DIR_VARIABLE: &str = "COMPARE_TLS_DIR";

static CERTIFICATES: OnceLock<(tempfile::TempDir, pki::Pki)> = OnceLock::new();

fn made() -> &'static (tempfile::TempDir, pki::Pki) {
    CERTIFICATES.get_or_init(|| {
        let pki = pki::Pki::generate().expect("certificates");
        let dir = tempfile::tempdir().expect("temp dir");
        pki.write_to(dir.path()).expect("write the certificates");
        (dir, pki)
    })
}

/// The directory of this run's certificates, made on first use.
pub fn certificates() -> &'static Path {
    made().0.path()
}

/// In a server process: the config from the certificates the bench made.
fn server_config() -> Arc<rustls::ServerConfig> {
    let dir = PathBuf::from(std::env::var_os(DIR_VARIABLE).expect("COMPARE_TLS_DIR"));
    socketserver::tls::ServerPem::files(dir.join("server.pem"), dir.join("server.key"))
        .provider(pki::provider())
        .build()
        .expect("server config")
}

fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| pki::client_config(made().1.ca.as_bytes(), None).expect("client config")))
}

/// A TLS connection for the load (the handshake completes on first use).
pub fn connect(server: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let tcp = crate::load::connect(server);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    StreamOwned::new(ClientConnection::new(client_config(), name).expect("a client session"), tcp)
}

/// This crate: `TcpServer`, a thread per connection, TLS.
pub fn socketserver_tls()
-> socketserver::Result<socketserver::Server<socketserver::transport::TcpTransport, PrimeService>> {
    TcpServer::builder(PrimeService::default()).dispatch(Dispatch::threads()).tls(server_config()).bind("127.0.0.1:0")
}

/// The floor: a thread per connection, the handshake in it, answers to a
/// chunk of input written back as one flush.
pub fn std_tls() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = server_config();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_nodelay(true);
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let Ok(session) = ServerConnection::new(config) else { return };
                let mut tls = StreamOwned::new(session, conn);
                let mut input = vec![0u8; 16 * 1024];
                let (mut pending, mut out) = (Vec::new(), Vec::new());
                loop {
                    let n = match tls.read(&mut input) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&input[..n]);
                    let mut used = 0;
                    while let Some(end) = pending[used..].iter().position(|&b| b == b'\n') {
                        out.extend_from_slice(answer(&pending[used..used + end + 1]));
                        used += end + 1;
                    }
                    pending.drain(..used);
                    if !out.is_empty() && (tls.write_all(&out).is_err() || tls.flush().is_err()) {
                        return;
                    }
                    out.clear();
                }
            });
        }
    });
    address
}

/// `threads` clients, each asking one question per new TLS connection.
pub fn handshakes(server: SocketAddr, threads: usize, duration: Duration) -> Stats {
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stats = Stats::default();
                let start = Instant::now();
                while start.elapsed() < duration {
                    let began = Instant::now();
                    let mut tls = connect(server);
                    let mut line = String::new();
                    let asked = tls.write_all(b"17\n").and_then(|()| BufReader::new(&mut tls).read_line(&mut line));
                    match asked {
                        Ok(_) if line == "T\n" => {
                            stats.requests += 1;
                            stats.latencies.push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                        Ok(_) => stats.wrong += 1,
                        Err(_) => stats.lost += 1,
                    }
                }
                stats.elapsed = start.elapsed();
                stats
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("handshake client")).fold(Stats::default(), Stats::merge)
}
