//! The prime example's binary as a separate process, and what /proc says
//! about a process: open fds, threads, memory, CPU time.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// The `prime` example binary, built by `cargo test` next to this test's binary.
pub fn prime_binary() -> PathBuf {
    example_binary("prime")
}

/// An example's binary, built by `cargo test` next to this test's binary.
pub fn example_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} missing: run `cargo build --examples`", path.display());
    path
}

/// A `prime serve` process; killed if the test ends without stopping it.
pub struct Serve {
    pub child: Child,
    pub address: String,
}

impl Serve {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(kind: &str, addr: &str, flags: &[&str]) -> Serve {
        Serve::from_command(Command::new(prime_binary()).args(["serve", kind, addr]).args(flags).stderr(Stdio::null()))
    }

    /// Like `start`, with the server's log (stderr) written to `log`.
    pub fn start_logged(kind: &str, addr: &str, flags: &[&str], log: std::fs::File) -> Serve {
        Serve::from_command(Command::new(prime_binary()).args(["serve", kind, addr]).args(flags).stderr(log))
    }

    /// Runs `command`, which must print `listening on ADDR` first.
    pub fn from_command(command: &mut Command) -> Serve {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let address = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {first:?}")).trim_end();
        Serve { address: address.to_string(), child }
    }

    /// Sends `signal` and waits (bounded) for the process to exit.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        send_signal(self.pid(), signal);
        self.wait()
    }

    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "prime serve did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads:")
}

/// Open fds of `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// User plus system CPU time of `pid`, in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the state field: utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Waits (bounded) until `done` holds, checking every few milliseconds.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes waiting in the receive queue of the IPv4 UDP socket bound to
/// `port`, from /proc/net/udp; `None` if no such socket is open.
pub fn udp_receive_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (_, local_port) = fields.get(1)?.split_once(':')?;
        if u16::from_str_radix(local_port, 16).ok()? != port {
            return None;
        }
        let (_, receive) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(receive, 16).ok()
    })
}

/// The pids of `pid`'s child processes, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
        if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
            children.extend(entry.file_name().to_string_lossy().parse::<u32>());
        }
    }
    children
}

/// Sends `signal` (a name such as "TERM") to `pid` without waiting.
pub fn send_signal(pid: u32, signal: &str) {
    assert!(Command::new("kill").args(["-s", signal, &pid.to_string()]).status().unwrap().success());
}

/// A file the server's log goes to, and a way to read what it holds so far.
pub struct LogFile {
    file: tempfile::NamedTempFile,
}

impl LogFile {
    pub fn new() -> LogFile {
        LogFile { file: tempfile::NamedTempFile::new().unwrap() }
    }

    /// A handle for the child's stderr.
    pub fn writer(&self) -> std::fs::File {
        self.file.reopen().unwrap()
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(self.file.path()).unwrap()
    }

    /// Waits (bounded) until the log holds `needle`.
    pub fn wait_for(&self, needle: &str) {
        eventually(&format!("the log says {needle:?}"), || self.text().contains(needle));
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}

/// The serving process named by the pid file; ended (SIGTERM) when dropped,
/// whichever successor it is by then.
pub struct PidFile(pub std::path::PathBuf);

impl PidFile {
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let pid = self.pid();
        if pid != 0 {
            // It may be gone already.
            let _ = Command::new("kill").args(["-s", "TERM", &pid.to_string()]).stderr(Stdio::null()).status();
        }
    }
}

/// Whether the tests run as root (some need to, to drop to `nobody`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

pub fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// Clients asking in a loop on threads of their own, counting answers
/// that were right, wrong, or never came.
pub struct Load {
    pub done: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    wrong: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `clients` threads, each running the asker `make` gives it until
    /// stopped; `expected` is the one right answer.
    pub fn start<A>(clients: usize, expected: &'static str, mut make: impl FnMut() -> A) -> Load
    where
        A: FnMut() -> std::io::Result<String> + Send + 'static,
    {
        let (done, failed, wrong) = (Arc::default(), Arc::default(), Arc::default());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let mut ask = make();
                let counters: [Arc<AtomicUsize>; 3] = [Arc::clone(&done), Arc::clone(&failed), Arc::clone(&wrong)];
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let outcome = match ask() {
                            Ok(answer) if answer == expected => 0,
                            Ok(answer) => {
                                eprintln!("wrong answer {answer:?}");
                                2
                            }
                            Err(e) => {
                                eprintln!("no answer: {e}");
                                1
                            }
                        };
                        counters[outcome].fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load { done, failed, wrong, stop, threads }
    }

    /// Right answers so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `more` right answers come after this call.
    pub fn flows(&self, more: usize) {
        let before = self.done();
        eventually(&format!("{more} more answers"), || self.done() >= before + more);
    }

    /// Stops the clients; returns how many requests failed and how many got a wrong answer.
    pub fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        (self.failed.load(Ordering::SeqCst), self.wrong.load(Ordering::SeqCst))
    }
}

/// Restarts the `prime serve` named by `pid_file` with SIGHUP (feature
/// `systemd`), and waits (bounded) until its successor serves and it is gone.
pub fn restart_by_sighup(pid_file: &PidFile) {
    let old = pid_file.pid();
    send_signal(old, "HUP");
    eventually(&format!("a successor of {old} writes the pid file"), || {
        let now = pid_file.pid();
        now != 0 && now != old
    });
    eventually(&format!("the old process {old} exits"), || gone(old));
}
