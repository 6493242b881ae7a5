//! File-descriptor accounting. These tests count this process's open fds, so
//! they run one at a time (other tests in this binary would skew the count).

mod common;

use std::sync::Mutex;

use common::process::eventually;
use common::*;
use socketserver::{TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn server_close_closes_the_fd_and_the_address_can_be_bound_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir();

    // A TCP server that served clients leaves TIME_WAIT connections behind:
    // rebinding must still work.
    let running = Running::start(TcpServer::bind("127.0.0.1:0", echo()).unwrap());
    for _ in 0..3 {
        assert_eq!(StreamClient::connect(&running.address).unwrap().ask("x\n").unwrap(), "x\n");
    }
    let addr = running.inet();
    running.stop().unwrap();

    let server = TcpServer::bind(addr, echo()).unwrap();
    let fd = server.fileno();
    assert!(fd_is_open(fd));
    server.server_close();
    assert!(!fd_is_open(fd));
    TcpServer::bind(addr, echo()).unwrap();

    let udp = UdpServer::bind("127.0.0.1:0", echo()).unwrap();
    let (fd, addr) = (udp.fileno(), udp.server_address().as_inet().unwrap());
    udp.server_close();
    assert!(!fd_is_open(fd));
    UdpServer::bind(addr, echo()).unwrap();

    let path = dir.path().join("again.sock");
    for _ in 0..2 {
        let unix = UnixStreamServer::bind(&path, echo()).unwrap();
        let fd = unix.fileno();
        unix.server_close();
        assert!(!fd_is_open(fd));
        let unix = UnixDatagramServer::bind(&path, echo()).unwrap();
        let fd = unix.fileno();
        drop(unix);
        assert!(!fd_is_open(fd));
    }
}

#[test]
fn a_thousand_failed_binds_leak_no_fd() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let taken = TcpServer::bind("127.0.0.1:0", echo()).unwrap();
    let addr = taken.server_address().as_inet().unwrap();
    let dir = temp_dir();
    let live = dir.path().join("live.sock");
    let _live = UnixStreamServer::bind(&live, echo()).unwrap();

    let before = open_fds();
    for _ in 0..1000 {
        assert!(TcpServer::bind(addr, echo()).is_err());
    }
    for _ in 0..100 {
        assert!(UnixStreamServer::bind(&live, echo()).is_err());
    }
    assert_eq!(open_fds(), before);
}

#[test]
fn served_connections_leave_no_fd_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let running = Running::start(TcpServer::bind("127.0.0.1:0", echo()).unwrap());
    let before = open_fds();
    for i in 0..200 {
        let mut client = StreamClient::connect(&running.address).unwrap();
        assert_eq!(client.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
    }
    // The last connection may still be closing on the server thread; one
    // more round trip orders us after it.
    let mut last = StreamClient::connect(&running.address).unwrap();
    last.ask("sync\n").unwrap();
    drop(last);
    eventually("the fd count is back to where it was", || open_fds() <= before);
}

#[test]
fn passed_fds_a_handler_does_not_take_are_closed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir();
    let ignore = |req: &mut socketserver::Request<'_>| std::io::Read::read(&mut req.rfile, &mut [0u8; 8]).map(drop);
    let stream = Running::start(UnixStreamServer::bind(dir.path().join("s.sock"), ignore).unwrap());
    let dgram = Running::start(UnixDatagramServer::bind(dir.path().join("d.sock"), ignore).unwrap());
    let script = r#"
import os, socket, sys
stream, dgram, own = sys.argv[1], sys.argv[2], sys.argv[3]
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
d.bind(own)
for _ in range(20):
    r, w = os.pipe()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(stream)
    socket.send_fds(s, [b"x"], [r, w])
    s.close()
    d.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, r.to_bytes(4, sys.byteorder) + w.to_bytes(4, sys.byteorder))], 0, dgram)
    os.close(r); os.close(w)
"#;
    let before = open_fds();
    let own = dir.path().join("py.sock");
    let Ok(out) = std::process::Command::new("python3")
        .args(["-c", script, stream.path().to_str().unwrap(), dgram.path().to_str().unwrap(), own.to_str().unwrap()])
        .output()
    else {
        eprintln!("skipped: python3 not found");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One more request on each, so the 40 passed requests are done.
    let mut c = StreamClient::connect(&stream.address).unwrap();
    std::io::Write::write_all(&mut c, b"x").unwrap();
    let _ = std::io::Read::read_to_end(&mut c, &mut Vec::new());
    drop(c);
    eventually("the fd count is back to where it was", || open_fds() <= before);
}
