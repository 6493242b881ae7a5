//! `prime serve` under systemd's protocols (feature `systemd`; README,
//! "Running in production"): socket activation by the real
//! `systemd-socket-activate`, the sd_notify messages on a NOTIFY_SOCKET of
//! the test's own, and restarts on SIGHUP that lose nothing under load.
#![cfg(feature = "systemd")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::*;
use common::*;

/// Reads sd_notify messages until one holds `wanted`, bounded by IO_TIMEOUT.
fn wait_for_message(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.lines().any(|l| l == wanted)) {
        assert!(Instant::now() < deadline, "no {wanted} among {seen:?}");
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = temp_dir();
    let path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    let mut serve = Serve::from_command(
        Command::new(prime_binary())
            .args(["serve", "tcp", "127.0.0.1:0", "--threads"])
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000")
            .stderr(Stdio::null()),
    );
    let mut seen = Vec::new();
    wait_for_message(&notify, "READY=1", &mut seen);
    assert!(seen.iter().any(|m| m.contains(&format!("MAINPID={}", serve.pid()))), "{seen:?}");
    // Sent by the serving loop, at half the watchdog interval, while idle.
    for _ in 0..3 {
        seen.retain(|m| !m.contains("WATCHDOG=1"));
        wait_for_message(&notify, "WATCHDOG=1", &mut seen);
    }
    let mut client = TcpStream::connect(&serve.address).unwrap();
    client.write_all(b"17\n").unwrap();
    let mut answer = [0u8; 2];
    client.read_exact(&mut answer).unwrap();
    wait_for_message(&notify, "STATUS=serving; 1 active requests, 0 served", &mut seen);
    drop(client);
    send_signal(serve.pid(), "TERM");
    wait_for_message(&notify, "STOPPING=1", &mut seen);
    assert!(serve.wait().success());
}

fn have_socket_activate() -> bool {
    Command::new("systemd-socket-activate").arg("--help").output().is_ok_and(|o| o.status.success())
}

/// `systemd-socket-activate` listens, then runs `prime serve KIND ADDR`
/// with the socket as LISTEN_FDS when the first client comes.
fn socket_activate(kind: &str, addr: &str, port: u16, extra: &[&str]) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new("systemd-socket-activate");
    command.args(["-l", &listen]).args(extra).arg("--").arg(prime_binary()).args(["serve", kind, addr]);
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("Listening on"), "systemd-socket-activate said {line:?}");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    child
}

#[test]
fn the_example_serves_sockets_from_the_real_systemd_socket_activate() {
    if !have_socket_activate() {
        eprintln!("skipped: systemd-socket-activate not found");
        return;
    }
    let port = free_port(false);
    let mut tcp = socket_activate("tcp", "systemd:web", port, &["--fdname=web"]);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"17\n4\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut answers = String::new();
    client.read_to_string(&mut answers).unwrap();
    assert_eq!(answers, "T\nF\n");
    let _ = tcp.kill();
    let _ = tcp.wait();

    let port = free_port(true);
    let mut udp = socket_activate("udp", "systemd", port, &["--datagram"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.send_to(b"29\n", ("127.0.0.1", port)).unwrap();
    let mut reply = [0u8; 16];
    let n = client.recv(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"T\n");
    let _ = udp.kill();
    let _ = udp.wait();
}

#[test]
fn three_restarts_under_load_lose_nothing() {
    for kind in ["tcp", "udp"] {
        let dir = temp_dir();
        let pid_file = PidFile(dir.path().join("prime.pid"));
        let serve = Serve::start(kind, "127.0.0.1:0", &["--threads", "--pid-file", pid_file.0.to_str().unwrap()]);
        let address = serve.address.clone();
        let udp_client = || {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            udp
        };
        let load = if kind == "tcp" {
            Load::start(4, "T\n", || {
                let address = address.clone();
                move || ask_tcp(&address)
            })
        } else {
            Load::start(4, "T\n", || {
                let (address, udp) = (address.clone(), udp_client());
                move || ask_udp(&udp, &address)
            })
        };
        let mut during = 0;
        for _ in 1..=3 {
            load.flows(200);
            let at_signal = load.done();
            restart_by_sighup(&pid_file);
            during += load.done() - at_signal;
        }
        load.flows(20);
        let load_done = load.done();
        let (failed, wrong) = load.stop();
        assert_eq!((failed, wrong), (0, 0), "{kind}: requests lost or wrong across 3 restarts");
        eprintln!(
            "{kind}: {} requests across 3 restarts ({during} while a restart was under way), none lost",
            load_done
        );
        drop(serve);
    }
}

fn ask_tcp(address: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(address)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"17\n")?;
    conn.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

fn ask_udp(socket: &UdpSocket, address: &str) -> std::io::Result<String> {
    socket.send_to(b"17\n", address)?;
    let mut reply = [0u8; 16];
    let n = socket.recv(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}
