//! Unix-socket extras through the request: file descriptors a client passes
//! (SCM_RIGHTS, sent here by Python's socket module) and the peer's
//! credentials, on stream and datagram servers.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::Command;

use common::*;
use socketserver::{Request, UnixDatagramServer, UnixStreamServer};

/// Writes a line into every fd the client passed.
fn write_into_passed_fds(req: &mut Request<'_>) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let _ = req.rfile.read(&mut byte)?;
    for fd in req.take_fds() {
        std::fs::File::from(fd).write_all(b"written by the handler\n")?;
    }
    Ok(())
}

/// Python creates a pipe, passes its write end to the server with one byte,
/// and prints what arrives on the read end.
const PYTHON_PASS_PIPE: &str = r#"
import os, socket, sys
kind, path, own = sys.argv[1], sys.argv[2], sys.argv[3]
r, w = os.pipe()
if kind == "stream":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    socket.send_fds(s, [b"x"], [w])
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(own)
    s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, w.to_bytes(4, sys.byteorder))], 0, path)
os.close(w)
s.close()
print(os.read(r, 100).decode(), end="")
"#;

#[test]
fn a_handler_writes_into_a_pipe_a_python_client_passed() {
    let dir = temp_dir();
    let stream = Running::start(UnixStreamServer::bind(dir.path().join("s.sock"), write_into_passed_fds).unwrap());
    let dgram = Running::start(UnixDatagramServer::bind(dir.path().join("d.sock"), write_into_passed_fds).unwrap());
    for (kind, running) in [("stream", &stream), ("datagram", &dgram)] {
        let own = dir.path().join(format!("py-{kind}.sock"));
        let path = running.path();
        let args = [kind, path.to_str().unwrap(), own.to_str().unwrap()];
        let Ok(out) = Command::new("python3").arg("-c").arg(PYTHON_PASS_PIPE).args(args).output() else {
            eprintln!("skipped: python3 not found");
            return;
        };
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "written by the handler\n", "{kind}");
    }
}

/// Reports the peer's credentials as "pid uid gid".
fn report_credentials(req: &mut Request<'_>) -> std::io::Result<()> {
    let _ = req.rfile.read(&mut [0u8; 16])?;
    match req.peer_credentials() {
        Some(c) => write!(req.wfile, "{} {} {}", c.pid, c.uid, c.gid),
        None => write!(req.wfile, "none"),
    }
}

/// This process's pid, effective uid and effective gid, as /proc says.
fn own_credentials() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(2).unwrap().to_string() // real, effective, ...
    };
    format!("{} {} {}", std::process::id(), field("Uid:"), field("Gid:"))
}

#[test]
fn peer_credentials_are_this_processs_on_stream_and_datagram() {
    let dir = temp_dir();
    let stream = Running::start(UnixStreamServer::bind(dir.path().join("s.sock"), report_credentials).unwrap());
    let mut client = UnixStream::connect(stream.path()).unwrap();
    client.write_all(b"who\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, own_credentials());

    let dgram = Running::start(UnixDatagramServer::bind(dir.path().join("d.sock"), report_credentials).unwrap());
    let client = UnixDatagram::bind(dir.path().join("c.sock")).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.send_to(b"who", dgram.path()).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]), own_credentials());
}

#[test]
fn inet_requests_have_no_credentials() {
    let tcp = Running::start(socketserver::TcpServer::bind("127.0.0.1:0", report_credentials).unwrap());
    let mut client = StreamClient::connect(&tcp.address).unwrap();
    client.write_all(b"who\n").unwrap();
    client.shutdown_write().unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "none");
}

/// A handler passes a pipe's read end back to a Python client, which reads
/// what the handler then writes into the write end.
#[test]
fn a_handler_passes_an_fd_back_to_a_python_client() {
    let dir = temp_dir();
    let handler = |req: &mut Request<'_>| {
        let (reader, mut writer) = std::io::pipe()?;
        req.wfile.send_fds(b"fd", &[std::os::fd::AsFd::as_fd(&reader)])?;
        writer.write_all(b"through the passed pipe\n")
    };
    let running = Running::start(UnixStreamServer::bind(dir.path().join("back.sock"), handler).unwrap());
    let script = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
msg, fds, flags, addr = socket.recv_fds(s, 16, 4)
print(msg.decode(), len(fds), os.read(fds[0], 100).decode(), end="")
"#;
    let path = running.path();
    let Ok(out) = Command::new("python3").args(["-c", script, path.to_str().unwrap()]).output() else {
        eprintln!("skipped: python3 not found");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fd 1 through the passed pipe\n");

    let tcp = Running::start(socketserver::TcpServer::bind("127.0.0.1:0", handler).unwrap());
    let errors_seen = StreamClient::connect(&tcp.address).map(|mut c| {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).map(|_| rest)
    });
    assert!(errors_seen.unwrap().unwrap().is_empty(), "an inet connection cannot carry fds: nothing is sent");
}
