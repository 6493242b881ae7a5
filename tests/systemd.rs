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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A free loopback port (bound, read, released).
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
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

/// The serving process named by the pid file; ended (SIGTERM) when dropped,
/// whichever successor it is by then.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn pid(&self) -> u32 {
        std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let pid = self.pid();
        if pid != 0 {
            let _ = Command::new("kill").args(["-s", "TERM", &pid.to_string()]).status();
        }
    }
}

fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

#[test]
fn three_restarts_under_load_lose_nothing() {
    for kind in ["tcp", "udp"] {
        let dir = temp_dir();
        let pid_file = PidFile(dir.path().join("prime.pid"));
        let serve = Serve::start(kind, "127.0.0.1:0", &["--threads", "--pid-file", pid_file.0.to_str().unwrap()]);
        let address = serve.address.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let load: Vec<_> = (0..4)
            .map(|_| {
                let (stop, done, failed, address) =
                    (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&failed), address.clone());
                std::thread::spawn(move || {
                    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        let answer = if kind == "tcp" { ask_tcp(&address) } else { ask_udp(&udp, &address) };
                        match answer {
                            Ok(a) if a == "T\n" => done.fetch_add(1, Ordering::SeqCst),
                            Ok(a) => panic!("wrong answer {a:?}"),
                            Err(e) => {
                                eprintln!("{kind}: {e}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        let mut during = 0;
        for restart in 1..=3 {
            let old = pid_file.pid();
            let before = done.load(Ordering::SeqCst);
            eventually("requests flow", || done.load(Ordering::SeqCst) > before + 200);
            let at_signal = done.load(Ordering::SeqCst);
            send_signal(old, "HUP");
            eventually(&format!("restart {restart}: a new process writes the pid file"), || {
                let now = pid_file.pid();
                now != 0 && now != old
            });
            eventually(&format!("restart {restart}: the old process {old} exits"), || gone(old));
            during += done.load(Ordering::SeqCst) - at_signal;
        }
        let before = done.load(Ordering::SeqCst);
        eventually("requests flow after the last restart", || done.load(Ordering::SeqCst) > before + 20);
        stop.store(true, Ordering::SeqCst);
        load.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(failed.load(Ordering::SeqCst), 0, "{kind}: requests lost across 3 restarts");
        eprintln!(
            "{kind}: {} requests across 3 restarts ({during} while a restart was under way), none lost",
            done.load(Ordering::SeqCst)
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
