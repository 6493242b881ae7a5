//! `cargo bench --bench compare`: the prime service from this crate against
//! a hand-written std loop and Python's socketserver, same handler logic,
//! same load, in one invocation. Prints one table of ratios and writes it to
//! benches/results/compare.csv and compare.svg (the chart in BENCHMARKS.md).
//!
//! COMPARE_SECS sets the length of each load run (default 4 s); COMPARE_ONLY
//! runs only the runs whose "scenario server" contains it (and no extras).

// The example's own files, so every server runs the same handler logic.
// Benches build with cfg(test) but never run tests, hence the allow.
#[allow(dead_code)]
#[path = "../../examples/prime/parse.rs"]
mod parse;
#[allow(dead_code)]
#[path = "../../examples/prime/primality.rs"]
mod primality;
#[allow(dead_code)]
#[path = "../../examples/prime/prime.rs"]
mod prime;

#[cfg(feature = "proxy-protocol")]
#[allow(dead_code)]
#[path = "../../tests/common/balancer.rs"]
mod balancer;
mod extra;
mod load;
#[cfg(feature = "tls")]
#[allow(dead_code)]
#[path = "../../examples/prime/tls.rs"]
mod pki;
mod report;
mod serve;
mod sys;
mod syscalls;
#[cfg(feature = "tls")]
mod tls;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use report::Row;

/// A server under test, running in its own process.
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    /// With system calls counted: the server's pid (the child is `perf`)
    /// and where `perf` writes its counts when the server exits.
    counted: Option<(u32, std::path::PathBuf)>,
}

impl ServerProcess {
    /// One of this binary's own servers (see serve.rs), or Python's.
    /// `haproxy-N` is HAProxy in front of N proxied backends.
    pub fn start(name: &str) -> Option<ServerProcess> {
        let command = match name.strip_prefix("python-") {
            Some(kind) => {
                let mut c = Command::new("python3");
                c.args(["-c", serve::PYTHON_SERVER, kind]);
                c
            }
            None => with_fd_limit(&std::env::current_exe().ok()?, &["--serve", name]),
        };
        Self::spawn(command, None)
    }

    /// As [`start`](Self::start), with the server's system calls counted
    /// (see syscalls.rs) when this run counts them.
    pub fn start_counted(name: &str) -> Option<ServerProcess> {
        if name.starts_with("python-") || !*COUNTING {
            return Self::start(name);
        }
        let out = syscalls::output_file(name);
        let mut args = syscalls::perf_prefix(&out);
        args.extend([std::env::current_exe().ok()?.display().to_string(), "--serve".into(), name.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(with_fd_limit(std::path::Path::new("perf"), &args), Some(out))
    }

    fn spawn(mut command: Command, counted: Option<std::path::PathBuf>) -> Option<ServerProcess> {
        #[cfg(feature = "tls")]
        command.env(tls::DIR_VARIABLE, tls::certificates());
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take()?).read_line(&mut line).ok()?;
        let address = line.trim().parse().ok()?;
        let counted = match counted {
            // The server is running (it printed its address): perf's child.
            Some(out) => Some((first_child(child.id())?, out)),
            None => None,
        };
        Some(ServerProcess { child, address, counted })
    }

    pub fn pid(&self) -> u32 {
        self.counted.as_ref().map_or(self.child.id(), |(pid, _)| *pid)
    }

    /// Stops the server and returns its system-call counts, if counted.
    pub fn finish(mut self) -> Option<syscalls::Counts> {
        let (_, out) = self.counted.take()?;
        drop(self.child.stdin.take()); // the server's cue to exit; perf then writes
        for _ in 0..500 {
            if self.child.try_wait().ok()?.is_some() {
                return syscalls::read(&out);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// User plus system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

/// `program args`, run with its open-file limit raised to the hard limit
/// (crowds of connections need thousands of fds on both ends).
pub fn with_fd_limit(program: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg("ulimit -n \"$(ulimit -H -n)\" && exec \"$0\" \"$@\"").arg(program).args(args);
    command
}

/// Whether this run counts system calls (asked once).
static COUNTING: std::sync::LazyLock<bool> = std::sync::LazyLock::new(syscalls::enabled);

/// The first child of process `pid`.
fn first_child(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// User plus system CPU time of `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the server's cue to exit
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A load to put on one server, given its address.
type LoadRun = Box<dyn Fn(SocketAddr) -> load::Stats>;

fn secs() -> Duration {
    Duration::from_secs_f64(std::env::var("COMPARE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4.0))
}

/// One load run against one server.
fn measure(scenario: &str, server: &str, load: impl Fn(SocketAddr) -> load::Stats) -> Option<Row> {
    #[cfg(feature = "proxy-protocol")]
    if let Some(backends) = server.strip_prefix("haproxy-").and_then(|n| n.parse().ok()) {
        return behind_haproxy(scenario, server, backends, load);
    }
    let Some(process) = ServerProcess::start_counted(server) else {
        eprintln!("{scenario}: {server} could not start; skipped");
        return None;
    };
    let before = process.cpu_seconds();
    let stats = load(process.address);
    let cpu = process.cpu_seconds() - before;
    let mut row = Row::new(scenario, server, stats, cpu);
    row.count_syscalls(process.finish());
    Some(row)
}

/// One load run through HAProxy (examples/deploy/haproxy.cfg) in front of
/// `backends` servers reading its PROXY v2 headers. The CPU counted is the
/// whole server side: HAProxy and every backend.
#[cfg(feature = "proxy-protocol")]
fn behind_haproxy(
    scenario: &str,
    server: &str,
    backends: usize,
    load: impl Fn(SocketAddr) -> load::Stats,
) -> Option<Row> {
    use balancer::{Balancer, Front};
    if !Front::Haproxy.available() {
        eprintln!("{scenario}: haproxy is not installed; skipped");
        return None;
    }
    let processes: Vec<ServerProcess> =
        (0..backends).map(|_| ServerProcess::start("socketserver-tcp-proxied")).collect::<Option<_>>()?;
    let addresses: Vec<String> = processes.iter().map(|p| p.address.to_string()).collect();
    let haproxy = Balancer::start(Front::Haproxy, &addresses, &[]);
    let backends_cpu = || processes.iter().map(ServerProcess::cpu_seconds).sum::<f64>();
    let (haproxy_before, backends_before) = (cpu_seconds(haproxy.pid()), backends_cpu());
    let stats = load(haproxy.address.parse().ok()?);
    let (haproxy_cpu, backends_cpu) = (cpu_seconds(haproxy.pid()) - haproxy_before, backends_cpu() - backends_before);
    let per_request = |seconds: f64| seconds * 1e6 / stats.requests.max(1) as f64;
    eprintln!(
        "{server}: CPU µs/request: HAProxy {:.3}, backends {:.3}",
        per_request(haproxy_cpu),
        per_request(backends_cpu)
    );
    Some(Row::new(scenario, server, stats, haproxy_cpu + backends_cpu))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve::run(&args[i + 1]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--crowd") {
        load::Crowd::hold(&args[i + 1], args[i + 2].parse().expect("a count"), &args[i + 3]);
        return;
    }
    let duration = secs();
    let mut rows = Vec::new();
    // The optional features add scenarios below.
    #[cfg_attr(not(any(feature = "proxy-protocol", feature = "tls")), allow(unused_mut))]
    let mut scenarios: Vec<(&str, &[&str], LoadRun)> = vec![
        (
            "udp 4x32",
            &["socketserver-udp", "socketserver-udp-limited", "socketserver-udp-unbatched", "std-udp", "python-udp"],
            Box::new(move |a| load::udp(a, 4, 32, duration)),
        ),
        (
            "tcp 8x16",
            &["socketserver-tcp", "socketserver-tcp-limited", "std-tcp", "python-tcp"],
            Box::new(move |a| load::tcp(a, 8, 16, duration)),
        ),
        (
            "udp ping-pong",
            &["socketserver-udp", "std-udp", "python-udp"],
            Box::new(move |a| load::udp(a, 1, 1, duration)),
        ),
        (
            "tcp ping-pong",
            &["socketserver-tcp", "std-tcp", "python-tcp"],
            Box::new(move |a| load::tcp(a, 1, 1, duration)),
        ),
    ];
    // Through HAProxy (haproxy installed), with the direct connection to
    // one server as the reference.
    #[cfg(feature = "proxy-protocol")]
    scenarios.push((
        "tcp 8x16 lb",
        &["direct-socketserver-tcp", "haproxy-1", "haproxy-2", "haproxy-3"],
        Box::new(move |a| load::tcp(a, 8, 16, duration)),
    ));
    // TLS: pipelined on 8 connections, and one handshake per request from
    // 4 clients.
    #[cfg(feature = "tls")]
    scenarios.extend::<[(&str, &[&str], LoadRun); 2]>([
        (
            "tls 8x16",
            &["socketserver-tls", "std-tls", "python-tls"],
            Box::new(move |a| load::stream(a, 8, 16, duration, tls::connect)),
        ),
        (
            "tls handshakes",
            &["socketserver-tls", "std-tls", "python-tls"],
            Box::new(move |a| tls::handshakes(a, 4, duration)),
        ),
    ]);
    // Many connections: a crowd of silent ones held open while 4 clients
    // open a connection per request. Without a crowd, also against a pool
    // whose handler hands every connection back (the client's end comes
    // with its request).
    let crowds: [(&str, usize, &[&str]); 3] = [
        ("crowd 0", 0, &["socketserver-tcp-pool", "socketserver-kept-4", "tokio-tcp", "std-tcp"]),
        ("crowd 8000", 8_000, &["socketserver-tcp-pool", "tokio-tcp", "std-tcp"]),
        ("crowd 15000", 15_000, &["socketserver-tcp-pool", "tokio-tcp", "std-tcp"]),
    ];
    for (scenario, crowd, servers) in crowds {
        scenarios.push((
            scenario,
            servers,
            Box::new(move |a| {
                let _crowd = load::Crowd::open(a, crowd, false);
                load::per_connection(a, 4, duration)
            }),
        ));
    }
    // Keep-alive clients, each asked once and kept open, then asked again
    // at the end, while 4 clients open a connection per request; and 2,000
    // persistent clients asking every 100 ms (and 1,000 every second).
    // Framed: a pool of 8 (or 4).
    scenarios.extend::<[(&str, &[&str], LoadRun); 4]>([
        (
            "keep-alive 15000",
            &["socketserver-framed-8", "tokio-tcp", "std-tcp"],
            Box::new(move |a| {
                let crowd = load::Crowd::open(a, 15_000, true);
                let stats = load::per_connection(a, 4, duration);
                crowd.close();
                stats
            }),
        ),
        (
            "persistent 2000",
            &["socketserver-framed-4", "socketserver-kept-4", "tokio-tcp", "std-tcp"],
            Box::new(move |a| load::persistent(a, 2_000, Duration::from_millis(100), duration)),
        ),
        (
            "persistent 1000",
            &["socketserver-framed-4", "socketserver-kept-4", "tokio-tcp", "std-tcp"],
            Box::new(move |a| load::persistent(a, 1_000, Duration::from_secs(1), duration)),
        ),
        (
            "tcp 8x16 framed",
            &[
                "socketserver-framed-8",
                "socketserver-framed-reuseport-2",
                "socketserver-kept-4",
                "tokio-tcp",
                "std-tcp",
            ],
            Box::new(move |a| load::tcp(a, 8, 16, duration)),
        ),
    ]);
    // Per-client limits against one greedy source: 10,000 silent
    // connections from one address while 4 clients (each request from a
    // new address) open a connection per request; and one source flooding
    // datagrams while 8 others ask 800 times a second each. Each beside the same
    // load without the greedy source.
    for (scenario, crowd) in [("one source 0", 0), ("one source 10000", 10_000)] {
        scenarios.push((
            scenario,
            &["socketserver-tcp-pool-16-per-client"],
            Box::new(move |a| {
                let _crowd = load::Crowd::open_from_one_source(a, crowd);
                load::per_connection(a, 4, duration)
            }),
        ));
    }
    for (scenario, flood) in [("udp 8 paced", false), ("udp 8 paced flooded", true)] {
        scenarios.push((
            scenario,
            &["socketserver-udp-1000-per-client"],
            Box::new(move |a| {
                let flooder = flood.then(|| load::Flood::start(a, duration));
                // Each within its rate: 800 requests a second.
                let stats = load::udp_paced(a, 8, 800, duration);
                if let Some(flooder) = flooder {
                    flooder.report();
                }
                stats
            }),
        ));
    }
    let only = std::env::var("COMPARE_ONLY").ok();
    for (scenario, servers, load) in &scenarios {
        for server in *servers {
            if only.as_ref().is_some_and(|o| !format!("{scenario} {server}").contains(o.as_str())) {
                continue;
            }
            eprintln!("running {scenario} against {server}...");
            rows.extend(measure(scenario, server, load));
        }
    }
    let extras = if only.is_some() { Vec::new() } else { extra::run() };
    report::print_and_save(&mut rows, &extras);
}
