//! Serving sockets the process did not create (README, "Running in
//! production"): handed over as an fd, checked against the transport, and
//! never unlinked; and dropping privileges after binding.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::process::Command;

use common::process::*;
use common::*;
use socketserver::{Error, Request, TcpServer, UdpServer, UnixStreamServer};

#[test]
fn an_inherited_listener_is_served_and_its_address_read_from_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = TcpServer::builder(echo()).from_fd(OwnedFd::from(listener)).unwrap();
    assert_eq!(server.server_address().as_inet(), Some(address));
    let running = Running::start(server);
    let mut client = StreamClient::connect(&running.address).unwrap();
    assert_eq!(client.ask("inherited\n").unwrap(), "inherited\n");
}

#[test]
fn an_inherited_unix_socket_file_is_never_removed() {
    let dir = temp_dir();
    let path = dir.path().join("handed.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = UnixStreamServer::builder(echo()).from_fd(OwnedFd::from(listener)).unwrap();
    assert_eq!(server.server_address().as_path(), Some(path.as_path()));
    server.server_close();
    assert!(path.exists(), "the server removed a socket file it did not create");
}

#[test]
fn a_mismatched_inherited_socket_is_refused_naming_the_fd() {
    let h = |_: &mut Request<'_>| Ok(());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let not_listening = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    not_listening.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let dir = temp_dir();
    let unix_listener = std::os::unix::net::UnixListener::bind(dir.path().join("u.sock")).unwrap();
    let cases: Vec<(&str, OwnedFd)> = vec![
        ("not the stream socket", OwnedFd::from(udp)),
        ("not listening", OwnedFd::from(not_listening)),
        ("not a socket", OwnedFd::from(file)),
        ("not an IP socket", OwnedFd::from(unix_listener)),
    ];
    for (problem, fd) in cases {
        use std::os::fd::AsRawFd;
        let number = fd.as_raw_fd();
        match TcpServer::builder(h).from_fd(fd) {
            Err(e @ Error::Inherited { .. }) => {
                let message = e.to_string();
                assert!(message.contains(&format!("fd {number}")) && message.contains(problem), "{message}");
            }
            other => panic!("{problem}: {other:?}"),
        }
    }
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(matches!(UdpServer::builder(h).from_fd(OwnedFd::from(tcp)), Err(Error::Inherited { .. })));
}

/// Python as the launcher: it binds, then runs `prime serve KIND fd:N`
/// with the socket passed as fd N, as a supervisor would.
fn python_launch(kind: &str, socket_type: &str, extra: &[&str]) -> Option<std::process::Output> {
    let script = r#"
import socket, subprocess, sys
kind, socket_type, prime = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if socket_type == "dgram" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
if socket_type == "stream":
    s.listen()
fd = s.fileno()
p = subprocess.Popen([prime, "serve", kind, f"fd:{fd}"] + sys.argv[4:], pass_fds=[fd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
first = p.stdout.readline().strip()
if not first:
    print("EXIT", p.wait(), p.stderr.read().strip())
    sys.exit(0)
print(first, "bound", "127.0.0.1:%d" % s.getsockname()[1], flush=True)
if socket_type == "stream":
    c = socket.create_connection(s.getsockname(), timeout=20)
    c.sendall(b"17\n4\n"); c.shutdown(socket.SHUT_WR)
    print("answers", c.makefile().read().split())
else:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(20)
    c.sendto(b"17\n4\n", s.getsockname())
    print("answers", c.recv(100).decode().split())
p.terminate(); print("status", p.wait())
"#;
    let mut args = vec!["-c", script, kind, socket_type];
    let prime = prime_binary();
    args.push(prime.to_str().unwrap());
    args.extend_from_slice(extra);
    Command::new("python3").args(&args).output().ok()
}

#[test]
fn prime_serve_serves_a_socket_handed_over_as_fd_n() {
    for (kind, socket_type) in [("tcp", "stream"), ("udp", "dgram")] {
        let Some(out) = python_launch(kind, socket_type, &[]) else {
            eprintln!("skipped: python3 not found");
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let (printed, bound) = lines[0].split_once(" bound ").unwrap();
        assert_eq!(printed, format!("listening on {bound}"), "{kind}: the real address is announced");
        assert_eq!(lines[1], "answers ['T', 'F']", "{kind}");
        assert_eq!(lines[2], "status 0", "{kind}");
    }
}

#[test]
fn prime_serve_refuses_a_mismatched_or_missing_fd_with_exit_2() {
    if let Some(out) = python_launch("tcp", "dgram", &[]) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("EXIT 2 error: inherited fd"), "{stdout}");
        assert!(stdout.contains("a datagram socket, not the stream socket"), "{stdout}");
    }
    let prime = prime_binary();
    let not_a_socket = format!("exec '{}' serve tcp fd:5 5</dev/null", prime.display());
    for (what, mut command) in [("a file", Command::new("sh")), ("a closed fd", Command::new(&prime))] {
        let command = match what {
            "a file" => command.args(["-c", &not_a_socket]),
            _ => command.args(["serve", "tcp", "fd:99"]),
        };
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains("inherited fd"), "{what}: {stderr}");
    }
}

#[test]
fn the_pid_file_holds_the_serving_process() {
    let dir = temp_dir();
    let pid_file = dir.path().join("prime.pid");
    let mut serve = Serve::start("tcp", "127.0.0.1:0", &["--pid-file", pid_file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), format!("{}\n", serve.pid()));
    assert!(serve.signal("TERM").success());
}

#[test]
fn a_privileged_port_is_bound_as_root_then_served_as_nobody() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    if TcpStream::connect("127.0.0.1:81").is_ok() {
        eprintln!("skipped: something listens on port 81");
        return;
    }
    let mut serve = Serve::start("tcp", "127.0.0.1:81", &["--user", "nobody", "--threads"]);
    assert_eq!(serve.address, "127.0.0.1:81");
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    assert!(uid_line.split_whitespace().skip(1).all(|id| id == nobody), "{uid_line}: every uid is nobody's {nobody}");
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap().to_string();
    assert!(!groups.split_whitespace().skip(1).any(|g| g == "0"), "root's group kept: {groups}");
    let mut client = TcpStream::connect("127.0.0.1:81").unwrap();
    client.write_all(b"17\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "T\n");
    assert!(serve.signal("TERM").success());
}

#[test]
fn a_unix_socket_file_is_given_to_the_user_before_dropping_to_them() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = temp_dir();
    // nobody must reach the socket file's directory to remove it on close.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let path = dir.path().join("owned.sock");
    let mut serve = Serve::start("unix-stream", path.to_str().unwrap(), &["--user", "nobody"]);
    use std::os::unix::fs::MetadataExt;
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout).trim().parse().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), nobody);
    assert!(serve.signal("TERM").success());
    assert!(!path.exists(), "the server, now nobody, removed its own socket file");
}

/// Why restarts hand the same socket over instead of opening a second one
/// with SO_REUSEPORT (the naive restart): connections the kernel already
/// queued on the old socket die with it, although a new socket listens on
/// the same port.
#[test]
fn a_naive_reuseport_restart_drops_the_connections_queued_on_the_old_socket() {
    let old = TcpServer::builder(echo()).allow_reuse_port(true).bind("127.0.0.1:0").unwrap();
    let address = old.server_address().as_inet().unwrap();
    // Not serving yet: connections wait in the old socket's queue.
    let mut queued: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(address).unwrap()).collect();
    let new = TcpServer::builder(echo()).allow_reuse_port(true).bind(address).unwrap();
    let running = Running::start(new);
    // The old process goes away without a handover (its close would log
    // and close them; a crash or a plain exit resets them the same).
    drop(old);
    let mut lost = 0;
    for client in &mut queued {
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = client.write_all(b"x\n");
        let _ = client.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        if !(client.read_to_string(&mut answer).is_ok() && answer == "x\n") {
            lost += 1;
        }
    }
    assert_eq!(lost, queued.len(), "every queued connection is lost, though the port still listens");
    // The port still listens: a new client is served (a few tries: one that
    // raced the old socket's teardown may be reset with it).
    let served = (0..3).any(|_| {
        StreamClient::connect(&running.address).and_then(|mut fresh| fresh.ask("new\n")).is_ok_and(|a| a == "new\n")
    });
    assert!(served, "a new client is served on the same port");
}

/// Several inherited sockets (as systemd passes more than one) served by one
/// group, a thread each, with their counters added up.
#[test]
fn a_group_serves_several_inherited_sockets() {
    let listeners: Vec<std::net::TcpListener> =
        (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addresses: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let servers =
        listeners.into_iter().map(|l| TcpServer::builder(echo()).from_fd(OwnedFd::from(l)).unwrap()).collect();
    let group = socketserver::ServerGroup::serve(servers).unwrap();
    assert_eq!(group.server_address().as_inet(), Some(addresses[0]));
    for address in &addresses {
        let mut client = StreamClient::connect(&socketserver::Address::Inet(*address)).unwrap();
        assert_eq!(client.ask("each\n").unwrap(), "each\n");
    }
    eventually("both requests are counted", || group.stats().accepted == 2);
    group.shutdown().unwrap();
    assert!(matches!(
        socketserver::ServerGroup::serve(
            Vec::<socketserver::TcpServer<fn(&mut Request<'_>) -> std::io::Result<()>>>::new()
        ),
        Err(Error::State { .. })
    ));
}
