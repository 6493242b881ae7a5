//! TLS (feature `tls`) on real sockets, with clients nobody here wrote:
//! Python's `ssl` module and `openssl s_client`, plus rustls's client.
//! Mutual TLS accepted and refused; plaintext and garbage clients; 200
//! clients stalled mid-handshake against a pool of 4; shutdown with TLS
//! connections open; the writer's guarantees under TLS.
#![cfg(feature = "tls")]

mod common;

#[allow(dead_code)]
#[path = "../examples/prime/tls.rs"]
mod pki;

use rustls::pki_types::pem::PemObject;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::process::eventually;
use common::{Errors, IO_TIMEOUT, Running};
use socketserver::tls::ServerPem;
use socketserver::{Dispatch, Request, TcpServer, UdpServer, UnixStreamServer};

/// The certificates, also written out as PEM files for the outside clients.
struct Certs {
    pki: pki::Pki,
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let pki = pki::Pki::generate().unwrap();
        let dir = common::temp_dir();
        pki.write_to(dir.path()).unwrap();
        Certs { pki, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn server(&self, mutual: bool) -> Arc<rustls::ServerConfig> {
        let pem = ServerPem::bytes(self.pki.server_cert.clone(), self.pki.server_key.clone()).provider(pki::provider());
        let pem = if mutual { pem.client_ca_bytes(self.pki.ca.clone()) } else { pem };
        pem.build().unwrap()
    }

    fn client(&self, with_certificate: bool) -> Arc<rustls::ClientConfig> {
        let identity = with_certificate.then_some((self.pki.client_cert.as_bytes(), self.pki.client_key.as_bytes()));
        pki::client_config(self.pki.ca.as_bytes(), identity).unwrap()
    }
}

/// Answers each line with what the handshake settled, then the line.
fn reporter() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        let tls = req.tls().expect("a TLS connection");
        let summary = format!(
            "{:?} sni={} alpn={} client-certs={}",
            tls.protocol_version().unwrap(),
            tls.server_name().unwrap_or("-"),
            tls.alpn_protocol().map_or("-".into(), |p| String::from_utf8_lossy(p).into_owned()),
            tls.peer_certificates().len()
        );
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            write!(req.wfile, "{summary} {line}")?;
            line.clear();
        }
        Ok(())
    }
}

fn tls_server(config: Arc<rustls::ServerConfig>, errors: &Errors) -> TcpServer<impl socketserver::RequestHandler> {
    TcpServer::builder(reporter())
        .dispatch(Dispatch::threads())
        .tls(config)
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap()
}

/// A rustls client connection; `name` is the SNI name and the name checked.
fn rustls_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    rustls_client_after(b"", addr, config, name)
}

/// As `rustls_client`, with `before` sent in the clear first (a balancer's
/// PROXY header).
fn rustls_client_after(
    before: &[u8],
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.write_all(before).unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), tcp)
}

fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new("python3").arg("-c").arg(script).args(args).output().unwrap()
}

/// Python's ssl: connect, send two lines, read the two answers.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 3:
    context.load_cert_chain(sys.argv[3], sys.argv[4])
context.set_alpn_protocols(["prime/1"])
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"17\n4\n")
        answers = tls.makefile("rb")
        sys.stdout.write((answers.readline() + answers.readline()).decode())
"#;

#[test]
fn python_ssl_clients_are_served_and_see_the_handshake() {
    let certs = Certs::new();
    let errors = Errors::default();
    let running = Running::start(tls_server(certs.server(false), &errors));
    let port = running.inet().port().to_string();
    let out = python(PYTHON_CLIENT, &[&port, &certs.path("ca.pem")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    // The server does not offer ALPN, so none is agreed.
    assert_eq!(
        stdout,
        "TLSv1_3 sni=localhost alpn=- client-certs=0 17\nTLSv1_3 sni=localhost alpn=- client-certs=0 4\n"
    );
    assert_eq!(errors.all(), Vec::<String>::new());
    running.stop().unwrap();

    // A server that offers the protocol the client asks for agrees on it.
    let mut config = Arc::unwrap_or_clone(certs.server(false));
    config.alpn_protocols = vec![b"h2".to_vec(), b"prime/1".to_vec()];
    let running = Running::start(tls_server(Arc::new(config), &errors));
    let out = python(PYTHON_CLIENT, &[&running.inet().port().to_string(), &certs.path("ca.pem")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("TLSv1_3 sni=localhost alpn=prime/1 client-certs=0 17\n"), "{stdout:?}");
    running.stop().unwrap();
}

/// `openssl s_client` asks `line` at `address` with `extra` flags; returns
/// the first line it printed ("" if the server closed without an answer).
fn s_client(address: SocketAddr, certs: &Certs, extra: &[&str], line: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &address.to_string(), "-servername", "localhost"])
        .args(["-CAfile", &certs.path("ca.pem"), "-verify_return_error", "-quiet"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(line).unwrap();
    // s_client -quiet keeps the connection after its input ends: read the
    // answer line on a thread, bounded, then end it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let answer = rx.recv_timeout(IO_TIMEOUT).expect("s_client printed nothing and did not exit");
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    answer
}

#[test]
fn openssl_s_client_is_served_with_and_without_mutual_tls() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: openssl not installed");
        return;
    }
    let certs = Certs::new();
    let errors = Errors::default();
    let running = Running::start(tls_server(certs.server(false), &errors));
    let answer = s_client(running.inet(), &certs, &["-tls1_2"], b"29\n");
    assert_eq!(answer, "TLSv1_2 sni=localhost alpn=- client-certs=0 29\n");
    assert_eq!(errors.all(), Vec::<String>::new());
    running.stop().unwrap();

    let server = tls_server(certs.server(true), &errors);
    let stats = server.stats_handle();
    let running = Running::start(server);
    let identity = ["-cert", &certs.path("client.pem"), "-key", &certs.path("client.key")];
    let answer = s_client(running.inet(), &certs, &identity, b"31\n");
    assert!(
        answer.starts_with("TLSv1_3 sni=localhost alpn=- client-certs=") && answer.ends_with(" 31\n"),
        "{answer:?}"
    );
    assert_eq!(s_client(running.inet(), &certs, &[], b"31\n"), "", "answered without a client certificate");
    eventually("the refusal is counted", || stats.get().tls_failed == 1);
    running.stop().unwrap();
}

#[test]
fn mutual_tls_admits_a_client_certificate_from_the_ca_and_refuses_none() {
    let certs = Certs::new();
    let errors = Errors::default();
    let server = tls_server(certs.server(true), &errors);
    let stats = server.stats_handle();
    let running = Running::start(server);
    let port = running.inet().port().to_string();

    let with =
        python(PYTHON_CLIENT, &[&port, &certs.path("ca.pem"), &certs.path("client.pem"), &certs.path("client.key")]);
    assert!(with.status.success(), "python: {}", String::from_utf8_lossy(&with.stderr));
    let stdout = String::from_utf8_lossy(&with.stdout);
    // OpenSSL sends the CA with the client's own certificate: a chain of 2.
    assert!(stdout.starts_with("TLSv1_3 sni=localhost alpn=- client-certs=2 17\n"), "{stdout:?}");

    let without = python(PYTHON_CLIENT, &[&port, &certs.path("ca.pem")]);
    assert!(!without.status.success(), "served without a client certificate");
    // A certificate from another CA is refused as well.
    let stranger = Certs::new();
    let mut client = rustls_client(running.inet(), certs_with_foreign_identity(&certs, &stranger), "localhost");
    let _ = client.write_all(b"7\n");
    let mut rest = Vec::new();
    assert!(client.read_to_end(&mut rest).is_err() || rest.is_empty(), "served a foreign certificate");

    eventually("both refusals are counted", || stats.get().tls_failed == 2);
    let errors = errors.all();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in &errors {
        assert!(error.starts_with("TLS with 127.0.0.1:"), "{error}");
    }
    assert!(errors.iter().any(|e| e.contains("certificate")), "{errors:?}");
    running.stop().unwrap();
}

/// A client trusting `ours`' CA but presenting a certificate of `theirs`.
fn certs_with_foreign_identity(ours: &Certs, theirs: &Certs) -> Arc<rustls::ClientConfig> {
    let identity = Some((theirs.pki.client_cert.as_bytes(), theirs.pki.client_key.as_bytes()));
    pki::client_config(ours.pki.ca.as_bytes(), identity).unwrap()
}

#[test]
fn plaintext_and_garbage_clients_cost_one_error_each() {
    let certs = Certs::new();
    let errors = Errors::default();
    let server = tls_server(certs.server(false), &errors);
    let stats = server.stats_handle();
    let running = Running::start(server);
    for bytes in
        [&b"17\n"[..], b"GET / HTTP/1.0\r\n\r\n", &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]]
    {
        let mut client = TcpStream::connect(running.inet()).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        client.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        // At most a TLS alert record (content type 21), never an answer.
        assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    }
    // A client that connects and leaves without a byte is not an error.
    drop(TcpStream::connect(running.inet()).unwrap());
    let mut client = rustls_client(running.inet(), certs.client(false), "localhost");
    client.write_all(b"5\n").unwrap();
    client.conn.send_close_notify();
    client.flush().unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "TLSv1_3 sni=localhost alpn=- client-certs=0 5\n");

    eventually("three failed handshakes are counted", || stats.get().tls_failed == 3);
    let errors = errors.all();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("not a TLS handshake"), "{errors:?}");
    running.stop().unwrap();
}

/// The first bytes of a ClientHello: a record header and the start of the
/// message, then nothing more.
const PARTIAL_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// 200 clients stalled in their handshakes, against a pool of 4 workers:
/// a real client is answered while all 200 are still held (their deadline
/// is 30 s away; were they in workers, it would wait for that deadline).
#[test]
fn two_hundred_clients_stalled_mid_handshake_hold_no_worker() {
    let certs = Certs::new();
    let server = TcpServer::builder(reporter())
        .dispatch(Dispatch::pool(4))
        .idle_timeout(Some(Duration::from_secs(30)))
        .tls(certs.server(false))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let stalled: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut stream = TcpStream::connect(running.inet()).unwrap();
            // Half stall in the ClientHello, half before a byte.
            if i % 2 == 0 {
                stream.write_all(PARTIAL_HELLO).unwrap();
            }
            stream
        })
        .collect();
    let mut client = rustls_client(running.inet(), certs.client(false), "localhost");
    client.write_all(b"7\n").unwrap();
    client.conn.send_close_notify();
    client.flush().unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "TLSv1_3 sni=localhost alpn=- client-certs=0 7\n");
    // close_notify reaches the client just before the server counts the request.
    eventually("the answer is counted", || stats.get().served == 1);
    let now = stats.get();
    assert_eq!((now.tls_failed, now.idle_closed), (0, 0));
    running.stop().unwrap();
    drop(stalled);
}

/// A handshake that stalls is closed at its deadline, with one error each.
#[test]
fn a_stalled_handshake_is_closed_at_its_deadline() {
    let certs = Certs::new();
    let errors = Errors::default();
    let server = TcpServer::builder(reporter())
        .idle_timeout(Some(Duration::from_millis(300)))
        .tls(certs.server(false))
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    for _ in 0..3 {
        let mut stream = TcpStream::connect(running.inet()).unwrap();
        stream.write_all(PARTIAL_HELLO).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        // Closed by the server at the deadline: an end of stream, not our read timeout.
        let read = stream.read_to_end(&mut rest);
        assert!(read.is_ok() || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset), "{read:?}");
    }
    eventually("the stalled handshakes are counted", || stats.get().tls_failed == 3);
    assert!(errors.all().iter().all(|e| e.contains("not finished by its deadline")), "{:?}", errors.all());
    running.stop().unwrap();
}

/// `serve_forever` returns at once with a handshake under way and a TLS
/// request running; closing then closes the one in its handshake and cuts
/// the running one at the drain deadline.
#[test]
fn shutdown_is_instant_with_tls_connections_open() {
    let certs = Certs::new();
    let mut server = TcpServer::builder(reporter())
        .dispatch(Dispatch::threads())
        .drain_timeout(Some(Duration::from_millis(200)))
        .tls(certs.server(false))
        .bind("127.0.0.1:0")
        .unwrap();
    let address = server.server_address().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || (server.serve_forever(), server));
    let mut stalled = TcpStream::connect(address).unwrap();
    stalled.write_all(PARTIAL_HELLO).unwrap();
    let mut open = rustls_client(address, certs.client(false), "localhost");
    open.write_all(b"3\n").unwrap();
    let mut first = String::new();
    BufReader::new(&mut open).read_line(&mut first).unwrap();
    assert!(first.ends_with(" 3\n"), "{first:?}");

    stop.shutdown();
    let (result, server) = serving.join().unwrap();
    result.unwrap();
    drop(server);
    for stream in [&mut stalled, &mut open.sock] {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        // Closed by the server: an end of stream (after a TLS alert, or
        // nothing), or a reset; never our read timeout.
        assert!(read.is_ok() || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset), "{read:?}");
    }
}

#[test]
fn a_datagram_server_refuses_tls_at_bind() {
    let certs = Certs::new();
    let refused = UdpServer::builder(|_: &mut Request<'_>| Ok(())).tls(certs.server(false)).bind("127.0.0.1:0");
    let Err(error) = refused else { panic!("a UDP server took a TLS config") };
    assert!(error.to_string().contains("TLS needs a stream transport"), "{error}");
}

/// Under TLS: sendfile copies through the encryption, fds are refused, a
/// large write leaves in full records, and `close_notify` ends the answer
/// (a clean end of stream for the client, not a truncation).
#[test]
fn sendfile_copies_fds_are_refused_and_close_notify_ends_the_answer() {
    let certs = Certs::new();
    let dir = common::temp_dir();
    let file_path = dir.path().join("payload");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file_path, &payload).unwrap();
    let handler = move |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        let file = std::fs::File::open(&file_path)?;
        let sent = req.wfile.sendfile(&file, 0, None)?;
        let refused = req.wfile.send_fds(b"x", &[]).unwrap_err();
        write!(req.wfile, "\nsent {sent}; fds: {refused}\n")
    };
    let socket = dir.path().join("tls.sock");
    let server = UnixStreamServer::builder(handler).tls(certs.server(false)).bind(&socket).unwrap();
    let running = Running::start(server);
    let unix = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    unix.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::StreamOwned::new(rustls::ClientConnection::new(certs.client(false), name).unwrap(), unix);
    client.write_all(b"go\n").unwrap();
    client.flush().unwrap();
    let mut answer = Vec::new();
    // read_to_end fails on a connection that ends without close_notify.
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(&answer[..payload.len()], &payload[..]);
    let tail = String::from_utf8_lossy(&answer[payload.len()..]).into_owned();
    assert_eq!(tail, "\nsent 300000; fds: file descriptors cannot travel inside TLS\n");
    running.stop().unwrap();
}

/// Request, answer, request, answer on one TLS connection: the writer
/// flushes before the reader blocks, as in the clear.
#[test]
fn request_response_on_one_connection_never_deadlocks() {
    let certs = Certs::new();
    let errors = Errors::default();
    let running = Running::start(tls_server(certs.server(false), &errors));
    let mut client = rustls_client(running.inet(), certs.client(false), "localhost");
    let mut reader = BufReader::new(&mut client);
    for n in 0..50 {
        reader.get_mut().write_all(format!("{n}\n").as_bytes()).unwrap();
        reader.get_mut().flush().unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.ends_with(&format!(" {n}\n")), "{line:?}");
    }
    client.sock.shutdown(Shutdown::Both).unwrap();
    running.stop().unwrap();
}

/// The example as users run it: `prime serve --tls-cert --tls-key` on TCP
/// and a Unix stream socket, asked by `prime ask --tls --ca`; 200 stalled
/// handshakes against `--workers 4 --timeout 30`, all still held, do not
/// keep a real client waiting (were they in workers, `ask` would give up
/// after its 5 s); flags that cannot work exit 2.
#[test]
fn prime_serves_tls_to_prime_ask_on_tcp_and_unix_streams() {
    use common::process::{Serve, prime_binary};
    let certs = Certs::new();
    let tls_flags = ["--tls-cert", &certs.path("server.pem"), "--tls-key", &certs.path("server.key")];
    let socket = certs.path("prime.sock");
    for (kind, addr) in [("tcp", "127.0.0.1:0"), ("unix-stream", socket.as_str())] {
        let mut flags = vec!["--workers", "4", "--timeout", "30"];
        flags.extend(tls_flags);
        let serve = Serve::start(kind, addr, &flags);
        let stalled: Vec<Box<dyn Write>> = (0..200)
            .map(|_| -> Box<dyn Write> {
                let mut stream: Box<dyn Write> = match kind {
                    "tcp" => Box::new(TcpStream::connect(&serve.address).unwrap()),
                    _ => Box::new(std::os::unix::net::UnixStream::connect(&serve.address).unwrap()),
                };
                stream.write_all(PARTIAL_HELLO).unwrap();
                stream
            })
            .collect();
        let out = Command::new(prime_binary())
            .args(["ask", kind, &serve.address, "--tls", "--ca", &certs.path("ca.pem"), "17", "4j"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "17 T\n4j E\n", "{}", String::from_utf8_lossy(&out.stderr));
        drop(stalled);
    }

    let refused = |args: &[&str]| {
        let out = Command::new(prime_binary()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cert = certs.path("server.pem");
    assert!(refused(&["serve", "udp", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &cert]).contains("--tls-cert"));
    assert!(refused(&["serve", "tcp", "127.0.0.1:0", "--tls-cert", &cert]).contains("--tls-key"));
    let missing = certs.path("missing.pem");
    assert!(refused(&["serve", "tcp", "127.0.0.1:0", "--tls-cert", &missing, "--tls-key", &cert]).contains(&missing));
    assert!(refused(&["ask", "tcp", "127.0.0.1:1", "--tls", "7"]).contains("--ca"));
}

/// Behind a TCP balancer that sends a PROXY header and passes TLS through:
/// the header is read first, then the handshake, and the handler sees both
/// the client the header names and the TLS session.
#[cfg(feature = "proxy-protocol")]
#[test]
fn a_proxy_header_then_tls_name_the_client_and_the_session() {
    use socketserver::proxy::ProxyProtocol;
    let certs = Certs::new();
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        let version = req.tls().and_then(|t| t.protocol_version());
        write!(req.wfile, "{} {version:?} {line}", req.client_address())
    };
    let server = TcpServer::builder(handler)
        .proxy_protocol(ProxyProtocol::required().trust("127.0.0.1/32".parse().unwrap()))
        .tls(certs.server(false))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n";
    let mut client = rustls_client_after(header, running.inet(), certs.client(false), "localhost");
    client.write_all(b"11\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&mut client).read_line(&mut answer).unwrap();
    assert_eq!(answer, "192.0.2.7:5555 Some(TLSv1_3) 11\n");
    running.stop().unwrap();
}

/// With `idle_timeout`, a client that finishes its handshake and then says
/// nothing is closed as idle, as on a plain connection.
#[test]
fn a_silent_client_after_its_handshake_is_closed_as_idle() {
    let certs = Certs::new();
    let server = TcpServer::builder(reporter())
        .idle_timeout(Some(Duration::from_millis(300)))
        .tls(certs.server(false))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut client = rustls_client(running.inet(), certs.client(false), "localhost");
    // Drive the handshake to its end without sending a byte of data.
    while client.conn.is_handshaking() {
        client.conn.complete_io(&mut client.sock).unwrap();
    }
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    eventually("the silent client is closed as idle", || stats.get().idle_closed == 1);
    assert_eq!(stats.get().tls_failed, 0);
    running.stop().unwrap();
}

/// Fork per request over TLS: the handshake is done in the parent's loop,
/// the session goes to the child with the connection, and the child ends it
/// with close_notify.
#[test]
fn prime_serves_tls_with_a_child_per_request() {
    use common::process::{Serve, prime_binary};
    let certs = Certs::new();
    let serve = Serve::start(
        "tcp",
        "127.0.0.1:0",
        &["--fork", "--tls-cert", &certs.path("server.pem"), "--tls-key", &certs.path("server.key")],
    );
    for _ in 0..3 {
        let out = Command::new(prime_binary())
            .args(["ask", "tcp", &serve.address, "--tls", "--ca", &certs.path("ca.pem"), "29", "1125899906842624"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout, "29 T\n1125899906842624 F\n", "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// socat's OPENSSL address as the client, when socat is installed.
#[test]
fn socat_openssl_clients_are_served() {
    if Command::new("socat").arg("-V").output().is_err() {
        eprintln!("skipped: socat not installed");
        return;
    }
    let certs = Certs::new();
    let errors = Errors::default();
    let running = Running::start(tls_server(certs.server(false), &errors));
    let address = format!("OPENSSL:{},cafile={},commonname=localhost", running.inet(), certs.path("ca.pem"));
    let mut child = Command::new("socat")
        // After its input ends, wait (bounded) for the server to finish.
        .args(["-t", "20", "-", &address])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"41\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with(" 41\n") && stdout.starts_with("TLSv1_"),
        "{stdout:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(errors.all(), Vec::<String>::new());
    running.stop().unwrap();
}

/// `prime certs DIR` writes what `serve --tls-*` and `ask --tls` take,
/// mutual TLS included.
#[test]
fn prime_certs_makes_what_serve_and_ask_need() {
    use common::process::{Serve, prime_binary};
    let dir = common::temp_dir();
    let pki = dir.path().join("pki");
    let made = Command::new(prime_binary()).arg("certs").arg(&pki).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let file = |name: &str| pki.join(name).display().to_string();
    let serve = Serve::start(
        "tcp",
        "127.0.0.1:0",
        &["--tls-cert", &file("server.pem"), "--tls-key", &file("server.key"), "--tls-client-ca", &file("ca.pem")],
    );
    let out = Command::new(prime_binary())
        .args(["ask", "tcp", &serve.address, "--tls", "--ca", &file("ca.pem")])
        .args(["--cert", &file("client.pem"), "--key", &file("client.key"), "97"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "97 T\n", "{}", String::from_utf8_lossy(&out.stderr));
    let without = Command::new(prime_binary())
        .args(["ask", "tcp", &serve.address, "--tls", "--ca", &file("ca.pem"), "97"])
        .output()
        .unwrap();
    assert!(!without.status.success(), "served without a client certificate");
}

/// Reads through to `inner`, keeping a copy of every byte.
struct Recording<R> {
    inner: R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The lengths of the application-data records (type 23) in raw TLS 1.2 bytes.
fn application_records(mut raw: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    while raw.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([raw[3], raw[4]]));
        if raw[0] == 23 {
            lengths.push(len);
        }
        raw = &raw[(5 + len).min(raw.len())..];
    }
    lengths
}

/// Over TLS 1.2, where record types show on the wire: a vectored write of
/// 60 small slices leaves in one record, and 40,000 bytes in three (16 KiB
/// of plaintext each), not a record per slice or per write.
#[test]
fn vectored_writes_leave_in_as_few_records_as_their_length_allows() {
    let certs = Certs::new();
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        let size: usize = line.trim().parse().map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        let piece = vec![b'x'; size / 60];
        let slices: Vec<std::io::IoSlice<'_>> = (0..60).map(|_| std::io::IoSlice::new(&piece)).collect();
        let mut rest = &mut slices.clone()[..];
        while !rest.is_empty() {
            let n = req.wfile.write_vectored(rest)?;
            std::io::IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            rustls::pki_types::CertificateDer::pem_slice_iter(certs.pki.server_cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            rustls::pki_types::PrivateKeyDer::from_pem_slice(certs.pki.server_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let server = TcpServer::builder(handler).tls(Arc::new(tls12)).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    for (size, records) in [(6_000, 1), (40_020, 3)] {
        let tcp = TcpStream::connect(running.inet()).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(certs.client(false), name).unwrap();
        let mut wire = Recording { inner: &tcp, seen: Vec::new() };
        let mut out = &tcp;
        while tls.is_handshaking() {
            tls.complete_io(&mut ReadWrite(&mut wire, &mut out)).unwrap();
        }
        writeln!(tls.writer(), "{size}").unwrap();
        let mut answer = Vec::new();
        loop {
            while tls.wants_write() {
                tls.write_tls(&mut out).unwrap();
            }
            if tls.read_tls(&mut wire).unwrap() == 0 {
                break;
            }
            tls.process_new_packets().unwrap();
            let _ = tls.reader().read_to_end(&mut answer);
        }
        assert_eq!(answer.len(), size / 60 * 60);
        let data = application_records(&wire.seen);
        // The answer's records, then close_notify's (an alert, type 21).
        assert_eq!(data.len(), records, "{size} bytes left in records of {data:?}");
    }
    running.stop().unwrap();
}

/// A reader and a writer as one `Read + Write`, for `complete_io`.
struct ReadWrite<'a, R, W>(&'a mut R, &'a mut W);

impl<R: Read, W: Write> Read for ReadWrite<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read, W: Write> Write for ReadWrite<'_, R, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.1.flush()
    }
}

/// A refused client certificate is logged in words, not as Rust debug
/// output: a client presenting its CA's own certificate as its identity.
#[test]
fn a_refused_client_certificate_is_reported_in_words() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let certs = Certs::new();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let (ca_pem, key_pem) = (ca.pem(), key.serialize_pem());
    let server_config = ServerPem::bytes(certs.pki.server_cert.clone(), certs.pki.server_key.clone())
        .client_ca_bytes(ca_pem.clone())
        .provider(pki::provider())
        .build()
        .unwrap();
    let errors = Errors::default();
    let server = tls_server(server_config, &errors);
    let stats = server.stats_handle();
    let running = Running::start(server);
    let identity = Some((ca_pem.as_bytes(), key_pem.as_bytes()));
    let mut client =
        rustls_client(running.inet(), pki::client_config(certs.pki.ca.as_bytes(), identity).unwrap(), "localhost");
    let _ = client.write_all(b"7\n");
    let mut rest = Vec::new();
    assert!(client.read_to_end(&mut rest).is_err() || rest.is_empty(), "served a CA as a client");
    eventually("the refusal is counted", || stats.get().tls_failed == 1);
    let errors = errors.all();
    assert!(errors[0].contains("the client presented a CA certificate, not a leaf"), "{errors:?}");
    assert!(!errors[0].contains("OtherError"), "{errors:?}");
    running.stop().unwrap();
}

/// The server's first flight does not fit in the socket at once: a
/// certificate with 1,500 names (about 40 KiB), a server socket whose send
/// buffer is 4 KiB and a client whose receive buffer is too. The handshake
/// must resume when there is room to send, not only when the client speaks
/// (which it will not, waiting for the rest of the flight).
#[test]
fn a_handshake_whose_flight_outgrows_the_send_buffer_resumes_when_there_is_room() {
    use rcgen::{CertificateParams, KeyPair};
    use socketserver::socket2::{Domain, Socket, Type};
    let names: Vec<String> = (0..1500).map(|i| format!("host-{i:04}.example.org")).collect();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names).unwrap().self_signed(&key).unwrap();
    let config = ServerPem::bytes(cert.pem(), key.serialize_pem()).provider(pki::provider()).build().unwrap();

    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    // Inherited by every accepted socket; set explicitly, never grown.
    listener.set_send_buffer_size(4096).unwrap();
    listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    listener.listen(16).unwrap();
    let errors = Errors::default();
    let server = TcpServer::builder(reporter())
        .tls(config)
        .idle_timeout(Some(Duration::from_secs(5)))
        .handle_error(errors.hook())
        .from_fd(std::os::fd::OwnedFd::from(listener))
        .unwrap();
    let running = Running::start(server);
    let script = r#"
import socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
raw.settimeout(20)
raw.connect(("127.0.0.1", int(sys.argv[1])))
with context.wrap_socket(raw) as tls:
    tls.sendall(b"17\n")
    sys.stdout.write(tls.makefile("rb").readline().decode())
"#;
    let out = python(script, &[&running.inet().port().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with(" 17\n"), "{stdout:?} {} {:?}", String::from_utf8_lossy(&out.stderr), errors.all());
    running.stop().unwrap();
}

/// Framed messages over TLS: records are read in the loop and messages cut
/// from the plaintext, so a pool of 2 serves ten keep-alive clients at
/// once. Lines split across records and pipelined in one are answered in
/// order, the handler sees its connection's TLS session and state, and a
/// client's `close_notify` is answered with the server's.
#[test]
fn framed_messages_over_tls_are_answered_on_kept_connections_by_a_small_pool() {
    use socketserver::{Framing, WorkerPool};
    let certs = Certs::new();
    let errors = Errors::default();
    let handler = |req: &mut Request<'_>| {
        let version = req.tls().and_then(|t| t.protocol_version());
        let asked = req.connection_state::<u32>().map_or(0, |n| {
            *n += 1;
            *n
        });
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        write!(req.wfile, "{version:?} #{asked} {line}")
    };
    let server = TcpServer::builder(handler)
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(1024))
        .tls(certs.server(false))
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut clients: Vec<_> =
        (0..10).map(|_| BufReader::new(rustls_client(running.inet(), certs.client(false), "localhost"))).collect();
    for round in 1..=3 {
        for (i, client) in clients.iter_mut().enumerate() {
            // Two writes, two records: the line arrives in pieces.
            client.get_mut().write_all(i.to_string().as_bytes()).unwrap();
            client.get_mut().write_all(b"\n").unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let mut answer = String::new();
            client.read_line(&mut answer).unwrap();
            assert_eq!(answer, format!("Some(TLSv1_3) #{round} {i}\n"));
        }
    }
    let first = &mut clients[0];
    first.get_mut().write_all(b"a\nb\n").unwrap();
    let mut answers = String::new();
    first.read_line(&mut answers).unwrap();
    first.read_line(&mut answers).unwrap();
    assert_eq!(answers, "Some(TLSv1_3) #4 a\nSome(TLSv1_3) #5 b\n");
    first.get_mut().conn.send_close_notify();
    first.get_mut().flush().unwrap();
    // Ok(0), not UnexpectedEof: the server said close_notify too.
    assert_eq!(first.read(&mut [0; 16]).unwrap(), 0);

    let out = python(PYTHON_CLIENT, &[&running.inet().port().to_string(), &certs.path("ca.pem")]);
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Some(TLSv1_3) #1 17\nSome(TLSv1_3) #2 4\n");
    running.stop().unwrap();
    assert_eq!(stats.get().served, 10 * 3 + 2 + 2);
    assert_eq!(errors.all(), Vec::<String>::new());
}

/// Behind a balancer, framed and over TLS: the PROXY header, then the
/// handshake, then messages; each message names the client the header did.
#[cfg(feature = "proxy-protocol")]
#[test]
fn framed_messages_after_a_proxy_header_and_tls_name_the_client() {
    use socketserver::Framing;
    use socketserver::proxy::ProxyProtocol;
    let certs = Certs::new();
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        write!(req.wfile, "{} {line}", req.client_address())
    };
    let server = TcpServer::builder(handler)
        .proxy_protocol(ProxyProtocol::required().trust("127.0.0.1/32".parse().unwrap()))
        .framing(Framing::lines(64))
        .tls(certs.server(false))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n";
    let mut client = BufReader::new(rustls_client_after(header, running.inet(), certs.client(false), "localhost"));
    for line in ["11\n", "12\n"] {
        client.get_mut().write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        client.read_line(&mut answer).unwrap();
        assert_eq!(answer, format!("192.0.2.7:5555 {line}"));
    }
    running.stop().unwrap();
}

/// A TLS connection handed back between requests keeps its session: a pool
/// of 1 serves two kept clients in turn, lines sent together are each a
/// request of their own, and a `close_notify` between requests is none.
/// With `idle_timeout`, a third client, come after connections were handed
/// back, waits for its first request with the workers as a newcomer.
#[test]
fn a_tls_connection_handed_back_keeps_its_session_and_holds_no_worker() {
    use socketserver::WorkerPool;
    let certs = Certs::new();
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? > 0 {
            let version = req.tls().and_then(|t| t.protocol_version());
            write!(req.wfile, "{version:?} {line}")?;
            req.hand_back();
        }
        Ok(())
    };
    for idle_timeout in [None, Some(IO_TIMEOUT)] {
        let server = TcpServer::builder(handler)
            .dispatch(WorkerPool::new(1).into())
            .idle_timeout(idle_timeout)
            .tls(certs.server(false))
            .bind("127.0.0.1:0");
        let server = server.unwrap();
        let stats = server.stats_handle();
        let running = Running::start(server);
        let connect = || BufReader::new(rustls_client(running.inet(), certs.client(false), "localhost"));
        let mut clients: Vec<_> = (0..2).map(|_| connect()).collect();
        for round in 0..2 {
            for (i, client) in clients.iter_mut().enumerate() {
                client.get_mut().write_all(format!("{round}.{i}\n").as_bytes()).unwrap();
                let mut answer = String::new();
                client.read_line(&mut answer).unwrap();
                assert_eq!(answer, format!("Some(TLSv1_3) {round}.{i}\n"), "{idle_timeout:?}");
            }
        }
        clients.push(connect());
        for (i, client) in clients.iter_mut().enumerate() {
            client.get_mut().write_all(format!("last.{i}\n").as_bytes()).unwrap();
            let mut answer = String::new();
            client.read_line(&mut answer).unwrap();
            assert_eq!(answer, format!("Some(TLSv1_3) last.{i}\n"), "{idle_timeout:?}");
        }
        clients[0].get_mut().write_all(b"x\ny\n").unwrap();
        let mut answers = String::new();
        clients[0].read_line(&mut answers).unwrap();
        clients[0].read_line(&mut answers).unwrap();
        assert_eq!(answers, "Some(TLSv1_3) x\nSome(TLSv1_3) y\n");
        // A close_notify between requests ends the connection, answered with
        // the server's own, and is no request.
        let closing = clients[1].get_mut();
        closing.conn.send_close_notify();
        closing.flush().unwrap();
        assert_eq!(clients[1].read(&mut [0; 16]).unwrap(), 0);
        running.stop().unwrap();
        assert_eq!(stats.get().served, 9, "{idle_timeout:?}");
    }
}

/// `ServerPem` from files: mutual TLS with a client CA file, and the
/// handler reads who the client is (CN and SANs) without an X.509 parser
/// of its own; the client is rustls's and Python's `ssl`.
#[test]
fn server_pem_files_serve_mutual_tls_and_the_handler_sees_who_the_client_is() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
    let certs = Certs::new();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "clients CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["alice.example.org".to_string(), "10.1.2.3".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::Rfc822Name("alice@example.org".try_into().unwrap()));
    params.distinguished_name.push(DnType::CommonName, "alice");
    let alice = params.signed_by(&key, &ca).unwrap();
    for (name, pem) in [("clients-ca.pem", ca.pem()), ("alice.pem", alice.pem()), ("alice.key", key.serialize_pem())] {
        std::fs::write(certs.path(name), pem).unwrap();
    }
    let config = ServerPem::files(certs.path("server.pem"), certs.path("server.key"))
        .client_ca_file(certs.path("clients-ca.pem"))
        .provider(pki::provider())
        .build()
        .unwrap();
    let handler = |req: &mut Request<'_>| {
        let id = req.tls().and_then(|tls| tls.client_identity()).cloned().unwrap_or_default();
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            let cn = id.common_name.as_deref().unwrap_or("-");
            write!(req.wfile, "{cn} {:?} {:?} {:?} {line}", id.dns_names, id.ip_addresses, id.emails)?;
            line.clear();
        }
        Ok(())
    };
    let running = Running::start(TcpServer::builder(handler).tls(config).bind("127.0.0.1:0").unwrap());
    let expected = |line: &str| format!("alice [\"alice.example.org\"] [10.1.2.3] [\"alice@example.org\"] {line}");

    let client_config =
        pki::client_config(certs.pki.ca.as_bytes(), Some((alice.pem().as_bytes(), key.serialize_pem().as_bytes())));
    let mut client = BufReader::new(rustls_client(running.inet(), client_config.unwrap(), "localhost"));
    client.get_mut().write_all(b"hello\n").unwrap();
    let mut answer = String::new();
    client.read_line(&mut answer).unwrap();
    assert_eq!(answer, expected("hello\n"));
    drop(client);

    let port = running.inet().port().to_string();
    let args = [port.as_str(), &certs.path("ca.pem"), &certs.path("alice.pem"), &certs.path("alice.key")];
    let out = python(PYTHON_CLIENT, &args);
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected("17\n") + &expected("4\n"));
    running.stop().unwrap();
}

/// A config that cannot be made says which file is at fault, and why.
#[test]
fn server_pem_errors_name_the_file_at_fault() {
    let certs = Certs::new();
    std::fs::write(certs.path("junk.pem"), "not a certificate\n").unwrap();
    let build = |chain: &str, key: &str| {
        let error = ServerPem::files(certs.path(chain), certs.path(key)).provider(pki::provider()).build().unwrap_err();
        assert!(matches!(error, socketserver::Error::TlsConfig { .. }), "{error:?}");
        error.to_string()
    };
    let missing = build("missing.pem", "server.key");
    assert!(missing.contains("missing.pem") && missing.contains("No such file"), "{missing}");
    let junk = build("junk.pem", "server.key");
    assert!(junk.contains("junk.pem") && junk.contains("no certificate"), "{junk}");
    // The client's key with the server's certificate.
    let mismatched = build("server.pem", "client.key");
    assert!(mismatched.contains("client.key") && mismatched.contains("server.pem"), "{mismatched}");
    // No provider given, none installed in this process: said, not guessed.
    let unchosen = ServerPem::files(certs.path("server.pem"), certs.path("server.key")).build().unwrap_err();
    assert!(unchosen.to_string().contains("crypto provider"), "{unchosen}");
}

/// A TLS connection whose idle deadline passes while part of a record is
/// arriving is still closed at a deadline. The loop is kept from it: a
/// sequential server busy with one request while more than one wait's
/// worth of other connections (1,100 partial ClientHellos) become ready
/// before the victim's one byte, so its byte is met by the deadline check,
/// not by the registry, and gives no plaintext.
#[test]
fn a_tls_connection_sending_part_of_a_record_at_its_deadline_is_still_closed() {
    use socketserver::Framing;
    let certs = Certs::new();
    let (started_tx, started) = std::sync::mpsc::channel();
    let started_tx = std::sync::Mutex::new(started_tx);
    let handler = move |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if line == "slow\n" {
            let _ = started_tx.lock().unwrap().send(());
            std::thread::sleep(Duration::from_secs(3));
        }
        req.wfile.write_all(line.as_bytes())
    };
    let server = TcpServer::builder(handler)
        .framing(Framing::lines(64))
        .tls(certs.server(false))
        .idle_timeout(Some(Duration::from_secs(2)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let ask = |client: &mut BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>, line: &str| {
        client.get_mut().write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        client.read_line(&mut answer).unwrap();
        assert_eq!(answer, line);
    };
    let mut victim = BufReader::new(rustls_client(running.inet(), certs.client(false), "localhost"));
    ask(&mut victim, "hi\n");
    let mut busy = BufReader::new(rustls_client(running.inet(), certs.client(false), "localhost"));
    ask(&mut busy, "hi\n");
    let mut fillers: Vec<TcpStream> = (0..1100).map(|_| TcpStream::connect(running.inet()).unwrap()).collect();
    eventually("every filler to be accepted", || stats.get().accepted == 1102);
    busy.get_mut().write_all(b"slow\n").unwrap();
    started.recv_timeout(IO_TIMEOUT).unwrap();
    for filler in &mut fillers {
        filler.write_all(&PARTIAL_HELLO[..1]).unwrap();
    }
    // The first byte of an application data record, and no more.
    victim.get_mut().get_mut().write_all(&[0x17]).unwrap();
    let victim = victim.get_mut().get_mut();
    victim.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let closed = victim.read(&mut [0u8; 64]);
    assert!(closed.is_ok(), "the victim is still open 10 s after its deadline: {closed:?}");
    drop(fillers);
    running.stop().unwrap();
}

/// A stop closes TLS connections between requests with the server's
/// `close_notify` (the client reads a clean end, not a cut), framed ones
/// between messages and kept ones a handler handed back alike.
#[test]
fn a_stop_ends_tls_connections_between_requests_with_close_notify() {
    use socketserver::{Framing, WorkerPool};
    let certs = Certs::new();
    let echo = |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(line.as_bytes())?;
        req.hand_back();
        Ok(())
    };
    let framed = TcpServer::builder(echo).framing(Framing::lines(1024));
    let kept = TcpServer::builder(echo);
    for (what, builder) in [("framed", framed), ("kept", kept)] {
        let server = builder.dispatch(WorkerPool::new(2).into()).tls(certs.server(false)).bind("127.0.0.1:0");
        let running = Running::start(server.unwrap());
        let mut client = BufReader::new(rustls_client(running.inet(), certs.client(false), "localhost"));
        client.get_mut().write_all(b"hello\n").unwrap();
        let mut answer = String::new();
        client.read_line(&mut answer).unwrap();
        assert_eq!(answer, "hello\n", "{what}");
        running.stop().unwrap();
        // Ok(0), not UnexpectedEof: the server said close_notify.
        let end = client.read(&mut [0; 16]);
        assert!(matches!(end, Ok(0)), "{what}: {end:?}");
    }
}

/// `verify_tls` sees the finished handshake: a client whose certificate
/// names someone not let in is closed (cleanly, after `close_notify`)
/// before any handler runs, with its reason reported and counted; the
/// same client let in is served. Framed on a pool, as an RPC service is.
#[test]
fn verify_tls_turns_a_client_away_by_its_certificate_name_before_any_handler_runs() {
    use socketserver::{Framing, WorkerPool};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let certs = Certs::new();
    let errors = Errors::default();
    let handled = Arc::new(AtomicUsize::new(0));
    let let_in = Arc::new(AtomicBool::new(false));
    let (handled_, let_in_) = (handled.clone(), let_in.clone());
    let handler = move |req: &mut Request<'_>| {
        handled_.fetch_add(1, Ordering::SeqCst);
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        write!(req.wfile, "ok {line}")
    };
    let server = TcpServer::builder(handler)
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(1024))
        .tls(certs.server(true))
        .verify_tls(move |client, tls| {
            let name = tls.client_identity().and_then(|id| id.common_name.clone());
            match name.as_deref() {
                Some("prime client") if let_in_.load(Ordering::SeqCst) => Ok(()),
                _ => Err(format!("{client} presented {name:?}, not on the list")),
            }
        })
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);

    let mut refused = rustls_client(running.inet(), certs.client(true), "localhost");
    // Several messages: none of them may reach a handler.
    let _ = refused.write_all(b"1\n2\n3\n");
    let mut rest = Vec::new();
    // A clean end (close_notify), not a reset or a truncation.
    assert_eq!(refused.read_to_end(&mut rest).map(|_| rest.len()).ok(), Some(0), "{rest:?}");
    eventually("the refusal is counted", || stats.get().tls_refused == 1);

    let_in.store(true, Ordering::SeqCst);
    let mut admitted = BufReader::new(rustls_client(running.inet(), certs.client(true), "localhost"));
    admitted.get_mut().write_all(b"4\n").unwrap();
    let mut answer = String::new();
    admitted.read_line(&mut answer).unwrap();
    assert_eq!(answer, "ok 4\n");
    drop(admitted);
    running.stop().unwrap();

    assert_eq!(handled.load(Ordering::SeqCst), 1, "the refused client's messages reached no handler");
    let now = stats.get();
    assert_eq!((now.tls_refused, now.tls_failed, now.served), (1, 0, 1));
    let errors = errors.all();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("TLS client 127.0.0.1:"), "{errors:?}");
    assert!(
        errors[0].contains("refused: 127.0.0.1:") && errors[0].contains("Some(\"prime client\"), not on the list"),
        "{errors:?}"
    );
}
