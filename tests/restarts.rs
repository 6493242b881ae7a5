//! Restarts on SIGHUP (feature `systemd`) where operators deploy them: the
//! binary replaced or deleted, a server that dropped to `--user`, a
//! `--reuseport` group; and signals around a restart: a stop after one
//! drains, a stop during one stops at once, a SIGHUP as early as the pid
//! file names the process is handled. README, "Restarts without downtime".
#![cfg(feature = "systemd")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::process::*;
use common::*;

/// Asks the server at `address` one number over a fresh TCP connection.
fn ask(address: &str, number: &str) -> String {
    let mut conn = TcpStream::connect(address).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.write_all(format!("{number}\n").as_bytes()).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

/// A copy of the prime binary at `dir/prime`, as a deploy installs one.
fn installed_copy(dir: &Path) -> PathBuf {
    let program = dir.join("prime");
    let staged = dir.join("prime.new");
    // Copied by `cp`, not here: a file this process held open for writing
    // would be "busy" (ETXTBSY) for any exec while a child forked by another
    // test thread still held the fd.
    assert!(Command::new("cp").arg(prime_binary()).arg(&staged).status().unwrap().success());
    // `mv new old`: the running process's executable becomes "(deleted)".
    std::fs::rename(&staged, &program).unwrap();
    program
}

/// `prime serve tcp 127.0.0.1:0 --pid-file` from `program`, logging to `log`.
fn serve_from(program: &Path, pid_file: &PidFile, flags: &[&str], log: &LogFile) -> Serve {
    Serve::from_command(
        Command::new(program)
            .args(["serve", "tcp", "127.0.0.1:0", "--pid-file", pid_file.0.to_str().unwrap()])
            .args(flags)
            .stderr(log.writer()),
    )
}

#[test]
fn a_restart_starts_the_binary_at_the_path_the_server_was_started_from() {
    let dir = temp_dir();
    let program = installed_copy(dir.path());
    let pid_file = PidFile(dir.path().join("prime.pid"));
    let log = LogFile::new();
    let serve = serve_from(&program, &pid_file, &[], &log);
    installed_copy(dir.path());
    restart_by_sighup(&pid_file);
    let successor = pid_file.pid();
    let exe = std::fs::read_link(format!("/proc/{successor}/exe")).unwrap();
    assert_eq!(exe, program, "the successor runs the binary now at the path");
    assert_eq!(ask(&serve.address, "17"), "T\n");

    // Deleted: the restart fails, saying which program and why, and the
    // server goes on, still named by the pid file.
    std::fs::remove_file(&program).unwrap();
    send_signal(successor, "HUP");
    log.wait_for("still serving");
    let text = log.text();
    assert!(text.contains(&format!("{}: No such file", program.display())), "{text}");
    assert_eq!(pid_file.pid(), successor);
    assert_eq!(ask(&serve.address, "17"), "T\n");
}

/// The report's case: one SIGTERM after a SIGHUP drains what the old
/// process still serves; it does not cut it as if it were a second signal.
#[test]
fn a_stop_after_a_restart_drains_instead_of_cutting() {
    let dir = temp_dir();
    let pid_file = PidFile(dir.path().join("prime.pid"));
    let log = LogFile::new();
    let mut serve = serve_from(&prime_binary(), &pid_file, &["--threads"], &log);
    let old = serve.pid();
    // A connection of the old process's, mid-conversation.
    let mut conn = TcpStream::connect(&serve.address).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answers = BufReader::new(conn.try_clone().unwrap());
    conn.write_all(b"7\n").unwrap();
    let mut answer = String::new();
    answers.read_line(&mut answer).unwrap();
    assert_eq!(answer, "T\n");

    send_signal(old, "HUP");
    eventually("the successor writes the pid file", || ![0, old].contains(&pid_file.pid()));
    log.wait_for("serves now");
    send_signal(old, "TERM");
    conn.write_all(b"11\n").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    answers.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "T\n", "the request in flight was finished: {}", log.text());
    let status = serve.wait();
    assert!(status.success(), "{status}: {}", log.text());
}

/// A stop asked for while the successor starts stops at once, not after
/// the successor's 30 s to become ready, and the successor with it.
#[test]
fn a_stop_during_a_restart_stops_at_once_and_the_successor_too() {
    let dir = temp_dir();
    let pid_file = PidFile(dir.path().join("prime.pid"));
    let log = LogFile::new();
    let mut serve = serve_from(&prime_binary(), &pid_file, &[], &log);
    // The successor will never be ready: opening its pid file, now a FIFO
    // nobody reads, blocks it before it serves.
    std::fs::remove_file(&pid_file.0).unwrap();
    assert!(Command::new("mkfifo").arg(&pid_file.0).status().unwrap().success());
    send_signal(serve.pid(), "HUP");
    let mut successor = 0;
    eventually("the successor starts", || {
        successor = children_of(serve.pid()).first().copied().unwrap_or(0);
        successor != 0
    });
    send_signal(serve.pid(), "TERM");
    // Bounded well under the 30 s the successor would be waited for.
    let status = serve.wait();
    assert!(status.success(), "{status}: {}", log.text());
    assert!(gone(successor), "successor {successor} left running");
    std::fs::remove_file(&pid_file.0).unwrap();
}

/// An early SIGHUP, sent the moment the pid file names the process, is
/// handled: the handlers are in place before the pid file is written.
#[test]
fn a_sighup_as_soon_as_the_pid_file_names_the_process_restarts_it() {
    for round in 0..5 {
        let dir = temp_dir();
        let pid_file = PidFile(dir.path().join("prime.pid"));
        let mut child = Command::new(prime_binary())
            .args(["serve", "tcp", "127.0.0.1:0", "--pid-file", pid_file.0.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read as often as possible: the window to hit is a few microseconds.
        let started = std::time::Instant::now();
        while pid_file.pid() == 0 {
            assert!(started.elapsed() < IO_TIMEOUT, "no pid file");
        }
        let first = pid_file.pid();
        send_signal(first, "HUP");
        eventually(&format!("round {round}: a successor serves and {first} has gone"), || {
            let now = pid_file.pid();
            now != first && !gone(now) && gone(first)
        });
        let status = child.wait().unwrap();
        assert!(status.success(), "round {round}: {status}");
    }
}

/// The order behind it, seen without a race: a pid file that is a FIFO
/// holds the server inside its write until the test reads it, and by then
/// SIGHUP, SIGINT and SIGTERM are already caught.
#[test]
fn signal_handlers_are_in_place_before_the_pid_file_names_the_process() {
    let dir = temp_dir();
    let fifo = dir.path().join("prime.pid");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut child = Command::new(prime_binary())
        .args(["serve", "tcp", "127.0.0.1:0", "--pid-file", fifo.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    eventually("the server opens its pid file", || {
        std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w == "wait_for_partner")
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).unwrap().trim();
    let caught = u64::from_str_radix(caught, 16).unwrap();
    for (name, signal) in [("SIGHUP", 1), ("SIGINT", 2), ("SIGTERM", 15)] {
        assert!(caught & (1 << (signal - 1)) != 0, "{name} is not caught yet: SigCgt {caught:x}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_reuseport_group_writes_its_pid_file_and_restarts() {
    let dir = temp_dir();
    let pid_file = PidFile(dir.path().join("prime.pid"));
    let log = LogFile::new();
    let serve = serve_from(&prime_binary(), &pid_file, &["--reuseport", "3"], &log);
    assert_eq!(pid_file.pid(), serve.pid());
    restart_by_sighup(&pid_file);
    let port = serve.address.rsplit_once(':').unwrap().1;
    let listening = listening_sockets(pid_file.pid(), port.parse().unwrap());
    assert_eq!(listening, 3, "the successor serves all three sockets: {}", log.text());
    for _ in 0..6 {
        assert_eq!(ask(&serve.address, "17"), "T\n");
    }
    let refused = Command::new(prime_binary()).args(["serve", "tcp", "fd:3", "--reuseport", "2"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--reuseport"));
}

/// How many listening TCP sockets on `port` the process `pid` holds.
fn listening_sockets(pid: u32, port: u16) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[1].ends_with(&local) && f[3] == "0A" && inodes.iter().any(|i| i == f[9]))
        .count()
}

/// A server that dropped to `--user` restarts: the successor starts as that
/// user with the same flags, skips the drop it cannot and need not do, and
/// rewrites the pid file it was given.
#[test]
fn a_server_that_dropped_to_a_user_still_restarts() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = temp_dir();
    // nobody must reach the pid file (the file itself is given to nobody).
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pid_file = PidFile(dir.path().join("prime.pid"));
    let log = LogFile::new();
    let serve = serve_from(&prime_binary(), &pid_file, &["--user", "nobody"], &log);
    restart_by_sighup(&pid_file);
    let successor = pid_file.pid();
    let status = std::fs::read_to_string(format!("/proc/{successor}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    assert!(uid.split_whitespace().skip(1).all(|id| id == "65534"), "{uid}");
    assert_eq!(ask(&serve.address, "17"), "T\n");
    // And again, from the unprivileged successor.
    restart_by_sighup(&pid_file);
    assert_eq!(ask(&serve.address, "17"), "T\n", "{}", log.text());
}
