//! A fleet of `prime serve` backends behind real load balancers (README,
//! "Behind a load balancer"): HAProxy sending PROXY v2, nginx's stream
//! module sending PROXY v1 over TCP and balancing UDP, each started from
//! its config in examples/deploy/. The client connects from 127.0.0.7, an
//! address nothing else here uses, so a backend that logged the balancer's
//! address instead could not pass. Skipped where the balancer is not
//! installed (.ci/run installs both).
#![cfg(feature = "proxy-protocol")]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::balancer::{Balancer, Front};
use common::process::*;
use common::{IO_TIMEOUT, temp_dir};
use socketserver::socket2::{Domain, Socket, Type};

/// The client's own address: no balancer or backend uses it.
const CLIENT: &str = "127.0.0.7";

/// A `prime serve` backend with its access log and pid file.
struct Backend {
    // Dropped first: the pid file names a restarted backend's successor.
    #[cfg_attr(not(feature = "systemd"), allow(dead_code, reason = "restarts need the systemd feature"))]
    pid_file: PidFile,
    serve: Serve,
    log: LogFile,
    _dir: tempfile::TempDir,
}

impl Backend {
    /// A backend on a port of its own; `proxied` ones read PROXY headers
    /// from 127.0.0.1 only (the balancers' address).
    fn start(kind: &str, proxied: bool) -> Backend {
        let dir = temp_dir();
        let pid_file = PidFile(dir.path().join("prime.pid"));
        let log = LogFile::new();
        let mut flags = vec!["--threads", "--access-log", "--pid-file", pid_file.0.to_str().unwrap()];
        if proxied {
            flags.extend(["--proxy-protocol", "--trusted-proxy", "127.0.0.1/32"]);
        }
        let serve = Serve::start_logged(kind, "127.0.0.1:0", &flags, log.writer());
        Backend { serve, log, pid_file, _dir: dir }
    }

    /// The access log's lines so far.
    fn answers(&self) -> Vec<String> {
        self.log.text().lines().filter(|l| l.contains(" tcp ") || l.contains(" udp ")).map(String::from).collect()
    }
}

fn fleet(kind: &str, proxied: bool) -> Vec<Backend> {
    (0..3).map(|_| Backend::start(kind, proxied)).collect()
}

fn addresses(backends: &[Backend]) -> Vec<String> {
    backends.iter().map(|b| b.serve.address.clone()).collect()
}

/// Sends `request` over TCP from [`CLIENT`] and reads the whole answer.
fn ask_from_client(address: &str, request: &[u8]) -> std::io::Result<String> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&format!("{CLIENT}:0").parse::<SocketAddr>().unwrap().into())?;
    socket.connect_timeout(&address.parse::<SocketAddr>().unwrap().into(), IO_TIMEOUT)?;
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request)?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.is_empty() {
        // The balancer closed the connection: its backend went away.
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without an answer"));
    }
    Ok(answer)
}

fn skip_without(front: Front) -> bool {
    if front.available() {
        return false;
    }
    eprintln!("skipped: {front:?} is not installed");
    true
}

/// Right answers through the balancer; every backend's access log shows
/// the client's own address; a forged header, sent through the balancer or
/// straight to a backend by a client that is not a trusted proxy, is only
/// data.
fn the_client_address_reaches_the_backends(front: Front) {
    if skip_without(front) {
        return;
    }
    let backends = fleet("tcp", true);
    let balancer = Balancer::start(front, &addresses(&backends), &[]);
    for _ in 0..30 {
        assert_eq!(ask_from_client(&balancer.address, b"17\n4\n").unwrap(), "T\nF\n");
    }
    let forged = b"PROXY TCP4 192.0.2.66 127.0.0.1 1 2\r\n17\n";
    assert_eq!(ask_from_client(&balancer.address, forged).unwrap(), "E\nT\n");
    assert_eq!(ask_from_client(&backends[0].serve.address, forged).unwrap(), "E\nT\n");

    for (i, backend) in backends.iter().enumerate() {
        let answers = backend.answers();
        assert!(answers.len() >= 10, "backend {i} answered only {answers:?}; balancer: {}", balancer.log());
        for line in &answers {
            assert!(line.starts_with(&format!("{CLIENT}:")), "backend {i} logged {line:?}");
        }
    }
}

#[test]
fn haproxy_passes_the_client_address_and_forged_headers_are_not_believed() {
    the_client_address_reaches_the_backends(Front::Haproxy);
}

#[test]
fn nginx_passes_the_client_address_and_forged_headers_are_not_believed() {
    the_client_address_reaches_the_backends(Front::Nginx);
}

/// One backend killed under load: no answer is wrong, at most the requests
/// it held fail, and the other two take every new connection.
fn a_killed_backend_costs_only_its_requests(front: Front) {
    if skip_without(front) {
        return;
    }
    let mut backends = fleet("tcp", true);
    let balancer = Balancer::start(front, &addresses(&backends), &[]);
    let clients = 4;
    let load = Load::start(clients, "T\n", || {
        let address = balancer.address.clone();
        move || ask_from_client(&address, b"17\n")
    });
    load.flows(100);
    backends[1].serve.child.kill().unwrap();
    backends[1].serve.child.wait().unwrap();
    let before: Vec<usize> = backends.iter().map(|b| b.answers().len()).collect();
    load.flows(300);
    let (failed, wrong) = load.stop();
    assert_eq!(wrong, 0);
    assert!(failed <= clients, "{failed} requests failed; only the {clients} in flight may; {}", balancer.log());
    for i in [0, 2] {
        assert!(backends[i].answers().len() > before[i] + 50, "backend {i} took no share after the kill");
    }
    if front == Front::Haproxy {
        // Its health checks (a PROXY v2 LOCAL header each) found the dead one
        // out, and only that one: the others answered every check.
        eventually("HAProxy's health check marks the killed backend down", || {
            balancer.log().contains("prime2 is DOWN")
        });
        let log = balancer.log();
        assert!(!log.contains("prime1 is DOWN") && !log.contains("prime3 is DOWN"), "{log}");
    }
}

#[test]
fn haproxy_moves_new_connections_off_a_killed_backend() {
    a_killed_backend_costs_only_its_requests(Front::Haproxy);
}

#[test]
fn nginx_moves_new_connections_off_a_killed_backend() {
    a_killed_backend_costs_only_its_requests(Front::Nginx);
}

/// Each backend restarted in turn (SIGHUP: a successor on the same socket)
/// while clients keep asking through the balancer: nothing refused or lost.
#[cfg(feature = "systemd")]
fn a_rolling_restart_refuses_nothing(front: Front) {
    if skip_without(front) {
        return;
    }
    let backends = fleet("tcp", true);
    let balancer = Balancer::start(front, &addresses(&backends), &[]);
    let load = Load::start(4, "T\n", || {
        let address = balancer.address.clone();
        move || ask_from_client(&address, b"17\n")
    });
    for backend in &backends {
        load.flows(100);
        restart_by_sighup(&backend.pid_file);
    }
    load.flows(100);
    let served = load.done();
    assert_eq!(load.stop(), (0, 0), "requests failed or were wrong; {}", balancer.log());
    eprintln!("{front:?}: {served} requests across a rolling restart of 3 backends, none lost");
    // The successors still see the client.
    for backend in &backends {
        assert!(backend.answers().iter().rev().take(5).all(|l| l.starts_with(&format!("{CLIENT}:"))));
    }
}

#[cfg(feature = "systemd")]
#[test]
fn haproxy_rolling_restart_of_every_backend_refuses_nothing() {
    a_rolling_restart_refuses_nothing(Front::Haproxy);
}

#[cfg(feature = "systemd")]
#[test]
fn nginx_rolling_restart_of_every_backend_refuses_nothing() {
    a_rolling_restart_refuses_nothing(Front::Nginx);
}

/// nginx balances UDP across three plain backends: every datagram answered
/// right, and each backend gets a share.
#[test]
fn nginx_balances_datagrams_across_the_backends() {
    if skip_without(Front::Nginx) {
        return;
    }
    let backends = fleet("udp", false);
    let balancer = Balancer::start(Front::Nginx, &[], &addresses(&backends));
    for n in 0..30 {
        // A socket per request: nginx keeps a session per client address.
        let client = UdpSocket::bind(format!("{CLIENT}:0")).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        client.send_to(b"29\n", &balancer.address).unwrap();
        let mut reply = [0u8; 16];
        let len = client.recv(&mut reply).unwrap_or_else(|e| panic!("datagram {n}: {e}; {}", balancer.log()));
        assert_eq!(&reply[..len], b"T\n");
    }
    for (i, backend) in backends.iter().enumerate() {
        assert!(!backend.answers().is_empty(), "backend {i} got no datagram");
    }
}

#[test]
fn the_cli_refuses_proxy_flags_that_cannot_work_with_exit_2() {
    for args in [&["--trusted-proxy", "127.0.0.1/32"][..], &["--proxy-protocol", "--trusted-proxy", "127.0.0.1"]] {
        let out = std::process::Command::new(prime_binary())
            .args(["serve", "tcp", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--trusted-proxy"), "{args:?}: the error names the flag: {stderr}");
    }
}
