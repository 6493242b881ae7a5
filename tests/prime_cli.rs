//! The prime example as users run it: the real `prime` binary in its own
//! process, queried over every transport by this test, by `prime ask`, and by
//! clients nobody here wrote (Python's socket module, socat, nc).

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};

use common::process::*;
use common::*;

const SEED: [(&str, &str); 8] = [
    ("4j", "E"),
    ("4", "F"),
    ("5", "T"),
    ("-5", "F"),
    ("17", "T"),
    ("29", "T"),
    ("1125899906842624", "F"),
    ("1125899906842623", "F"),
];

fn seed_request() -> String {
    SEED.iter().map(|(n, _)| format!("{n}\n")).collect()
}

fn seed_answers() -> String {
    SEED.iter().map(|(_, a)| format!("{a}\n")).collect()
}

fn stream_exchange(address: &str, request: &[u8]) -> String {
    try_stream_exchange(address, request).unwrap()
}

/// As [`stream_exchange`], for a server that may refuse (reset) the
/// connection.
fn try_stream_exchange(address: &str, request: &[u8]) -> std::io::Result<String> {
    let mut client = if address.starts_with('/') {
        StreamClient::Unix(std::os::unix::net::UnixStream::connect(address)?)
    } else {
        StreamClient::Tcp(TcpStream::connect(address)?)
    };
    if let StreamClient::Tcp(s) = &client {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
    }
    client.write_all(request)?;
    client.shutdown_write()?;
    let mut answer = String::new();
    client.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn seed_list_over_every_transport() {
    let dir = temp_dir();
    let stream_path = dir.path().join("p.sock");
    let dgram_path = dir.path().join("d.sock");
    for (kind, addr) in [
        ("tcp", "127.0.0.1:0"),
        ("unix-stream", stream_path.to_str().unwrap()),
        ("udp", "127.0.0.1:0"),
        ("unix-datagram", dgram_path.to_str().unwrap()),
    ] {
        let serve = Serve::start(kind, addr, &[]);
        if kind.starts_with("unix") {
            assert_eq!(serve.address, addr);
        } else {
            assert!(!serve.address.ends_with(":0"), "port 0 is resolved: {}", serve.address);
        }
        if kind == "tcp" || kind == "unix-stream" {
            assert_eq!(stream_exchange(&serve.address, seed_request().as_bytes()), seed_answers(), "{kind}");
        } else {
            let address = common::parse_address(&serve.address);
            let client = DatagramClient::new(&address, dir.path()).unwrap();
            for (n, expected) in SEED {
                assert_eq!(client.ask(&format!("{n}\n")).unwrap(), format!("{expected}\n"), "{kind} {n}");
            }
            // One datagram of several lines: one reply with the answers in order.
            assert_eq!(client.ask(&seed_request()).unwrap(), seed_answers(), "{kind} multi-line");
            // An empty datagram gets no reply and does not stop the server.
            client.send(b"").unwrap();
            assert_eq!(client.ask("17\n").unwrap(), "T\n", "{kind} after empty datagram");
        }
    }
}

#[test]
fn every_dispatch_flag_serves_the_seed_list_on_every_transport() {
    let dir = temp_dir();
    for flags in [
        &["--threads"][..],
        &["--workers", "3"],
        &["--fork"],
        &["--threads", "--max-connections", "4"],
        &["--batch", "16"],
        &["--reuseport", "2"],
    ] {
        for kind in ["tcp", "udp", "unix-stream", "unix-datagram"] {
            if flags[0] == "--reuseport" && kind.starts_with("unix") {
                continue;
            }
            let path = dir.path().join(format!("{kind}-{}.sock", unique()));
            let addr = if kind.starts_with("unix") { path.to_str().unwrap().to_string() } else { "127.0.0.1:0".into() };
            let mut serve = Serve::start(kind, &addr, flags);
            let out = Command::new(prime_binary())
                .args(["ask", kind, &serve.address])
                .args(SEED.map(|(n, _)| n))
                .output()
                .unwrap();
            let expected: String = SEED.iter().map(|(n, a)| format!("{n} {a}\n")).collect();
            assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{kind} {flags:?}");
            assert!(serve.signal("TERM").success(), "{kind} {flags:?}");
        }
    }
}

#[test]
fn a_pipelined_client_sending_1000_lines_before_reading_gets_1000_answers() {
    let serve = Serve::start("tcp", "127.0.0.1:0", &[]);
    let request: String = (0..1000).map(|i| format!("{i}\n")).collect();
    let answer = stream_exchange(&serve.address, request.as_bytes());
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.len(), 1000);
    let primes_below_1000 = 168;
    assert_eq!(lines.iter().filter(|l| **l == "T").count(), primes_below_1000);
    assert_eq!(lines[997], "T");
    assert_eq!(lines[999], "F");
}

#[test]
fn sigterm_and_sigint_stop_it_cleanly_and_remove_the_socket_file() {
    let dir = temp_dir();
    for (signal, kind) in [("TERM", "unix-stream"), ("INT", "unix-datagram"), ("TERM", "tcp")] {
        let path = dir.path().join(format!("{kind}.sock"));
        let addr = if kind == "tcp" { "127.0.0.1:0".to_string() } else { path.to_str().unwrap().to_string() };
        let mut serve = Serve::start(kind, &addr, &[]);
        if kind != "tcp" {
            assert!(path.exists());
        }
        let status = serve.signal(signal);
        assert!(status.success(), "SIG{signal} on {kind}: {status}");
        assert!(!path.exists(), "socket file removed after SIG{signal}");
    }
}

#[test]
fn bad_arguments_are_reported_as_clap_does_with_exit_2() {
    for args in [
        &["serve"][..],
        &["serve", "sctp", "127.0.0.1:0"],
        &["serve", "tcp", "127.0.0.1:0", "--bogus"],
        &["serve", "tcp", "127.0.0.1:0", "--max-digits", "many"],
        &["serve", "tcp", "127.0.0.1:0", "--threads", "--fork"],
        &["serve", "tcp", "127.0.0.1:0", "--workers"],
        // An address that cannot be one is a usage error, not a failed lookup.
        &["serve", "tcp", "[::1"],
        &["serve", "udp", "::1:53"],
        &["ask", "tcp"],
        &["frobnicate"],
    ] {
        let out = Command::new(prime_binary()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        // clap's format: what is wrong, then where to read more.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: ") && stderr.contains("--help"), "{args:?}: {stderr}");
    }
}

#[test]
fn bind_failure_names_the_address_and_exits_non_zero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(prime_binary()).args(["serve", "tcp", &addr]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

#[test]
fn ask_prints_one_line_per_number() {
    let dir = temp_dir();
    let path = dir.path().join("ask.sock");
    for (kind, addr) in [("tcp", "127.0.0.1:0"), ("udp", "127.0.0.1:0"), ("unix-datagram", path.to_str().unwrap())] {
        let serve = Serve::start(kind, addr, &[]);
        let out = Command::new(prime_binary()).args(["ask", kind, &serve.address, "7", "8", "x"]).output().unwrap();
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "7 T\n8 F\nx E\n", "{kind}");
    }
}

#[test]
fn ask_fails_on_a_malformed_reply_or_no_reply() {
    let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap().to_string();
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (_, from) = fake.recv_from(&mut buf).unwrap();
        fake.send_to(b"maybe\n", from).unwrap();
        fake // kept open, silent, for the second ask
    });
    let out = Command::new(prime_binary()).args(["ask", "udp", &addr, "7"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed"), "{}", String::from_utf8_lossy(&out.stderr));
    let _silent = answering.join().unwrap();
    let out = Command::new(prime_binary()).args(["ask", "udp", &addr, "7"]).output().unwrap();
    assert!(!out.status.success(), "a server that never answers is a failure");
}

#[test]
fn the_demo_checks_every_transport_and_exits_0() {
    let out = Command::new(prime_binary()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Built with the feature `tls`, the demo adds a TLS column.
    let (total, columns): (usize, &[&str]) = if cfg!(feature = "tls") {
        (40, &["tcp", "udp", "unix-stream", "unix-datagram", "tls (tcp)"])
    } else {
        (32, &["tcp", "udp", "unix-stream", "unix-datagram"])
    };
    assert!(stdout.contains(&format!("{total} of {total} answers correct")), "{stdout}");
    for column in columns {
        assert!(stdout.contains(column), "{stdout}");
    }
}

/// Python's own socket module as the client: nothing here wrote it.
#[test]
fn python_clients_get_the_seed_answers() {
    let tcp = Serve::start("tcp", "127.0.0.1:0", &[]);
    let udp = Serve::start("udp", "127.0.0.1:0", &[]);
    let script = r#"
import socket, sys
numbers = ["4j", "4", "5", "-5", "17", "29", "1125899906842624", "1125899906842623"]
def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)
tcp = socket.create_connection(hostport(sys.argv[1]), timeout=10)
f = tcp.makefile("rwb")
out = []
for n in numbers:
    f.write(n.encode() + b"\n"); f.flush()
    out.append(f.readline().decode().strip())
print("tcp", " ".join(out))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(10)
out = []
for n in numbers:
    udp.sendto(n.encode() + b"\n", hostport(sys.argv[2]))
    out.append(udp.recv(100).decode().strip())
print("udp", " ".join(out))
"#;
    let Ok(out) = Command::new("python3").args(["-c", script, &tcp.address, &udp.address]).output() else {
        eprintln!("skipped: python3 not found");
        return;
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tcp E F T F T T F F\nudp E F T F T T F F\n");
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// socat and nc, when installed (.ci/run installs them), as further foreign clients.
#[test]
fn socat_and_nc_clients_get_the_seed_answers() {
    let dir = temp_dir();
    let tcp = Serve::start("tcp", "127.0.0.1:0", &[]);
    let path = dir.path().join("socat.sock");
    let unix = Serve::start("unix-stream", path.to_str().unwrap(), &[]);
    let mut ran = false;
    if have("socat") {
        ran = true;
        for target in [format!("TCP:{}", tcp.address), format!("UNIX-CONNECT:{}", unix.address)] {
            let out = run_with_input("socat", &["-t", "5", "-", &target], seed_request().as_bytes());
            assert_eq!(out, seed_answers(), "socat {target}");
        }
    }
    // OpenBSD's nc: -N closes the sending side at end of input, as the protocol needs.
    if have("nc") && Command::new("sh").args(["-c", "nc -h 2>&1 | grep -q -- -N"]).status().is_ok_and(|s| s.success()) {
        ran = true;
        let (host, port) = tcp.address.rsplit_once(':').unwrap();
        let out = run_with_input("nc", &["-N", "-w", "5", host, port], seed_request().as_bytes());
        assert_eq!(out, seed_answers(), "nc");
    }
    if !ran {
        eprintln!("skipped: neither socat nor nc is installed");
    }
}

fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn public_listens_on_every_address_dual_stack_with_a_warning() {
    let dir = temp_dir();
    let log_path = dir.path().join("stderr");
    let serve = Serve::start_logged("tcp", "127.0.0.1:0", &["--public"], std::fs::File::create(&log_path).unwrap());
    let port = serve.address.strip_prefix("[::]:").unwrap_or_else(|| panic!("not [::]: {}", serve.address));
    // Reached over loopback only, through both families where IPv6 exists.
    let mut targets = vec![format!("127.0.0.1:{port}")];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        targets.push(format!("[::1]:{port}"));
    }
    for target in targets {
        let out = Command::new(prime_binary()).args(["ask", "tcp", &target, "31"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "31 T\n", "{target}");
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("warning: --public"), "{log}");
    let out = Command::new(prime_binary()).args(["serve", "unix-stream", "/tmp/x.sock", "--public"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--access-log`: a line per answer on stderr, starting with the client's
/// address as the handler sees it, then the transport and the answer.
#[test]
fn the_access_log_names_the_client_the_transport_and_the_answer() {
    let log = LogFile::new();
    let serve = Serve::start_logged("tcp", "127.0.0.1:0", &["--access-log"], log.writer());
    let client = TcpStream::connect(&serve.address).unwrap();
    let own = client.local_addr().unwrap();
    drop(client);
    let mut client = TcpStream::connect(&serve.address).unwrap();
    let me = client.local_addr().unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"17\n4j\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answers = String::new();
    client.read_to_string(&mut answers).unwrap();
    assert_eq!(answers, "T\nE\n");
    log.wait_for(&format!("{me} tcp E"));
    let lines: Vec<String> = log.text().lines().filter(|l| l.contains(" tcp ")).map(String::from).collect();
    assert_eq!(lines, [format!("{me} tcp T"), format!("{me} tcp E")], "{}", log.text());
    // The connection that sent nothing got no line.
    assert!(!log.text().contains(&own.to_string()));

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let serve = Serve::start_logged("udp", "127.0.0.1:0", &["--access-log"], log.writer());
    udp.send_to(b"29\n", &serve.address).unwrap();
    udp.recv(&mut [0u8; 16]).unwrap();
    log.wait_for(&format!("{} udp T", udp.local_addr().unwrap()));

    // A framed message is logged as what it came over, not as a datagram.
    let serve = Serve::start_logged("tcp", "127.0.0.1:0", &["--access-log", "--framing", "lines"], log.writer());
    let conn = TcpStream::connect(&serve.address).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    (&conn).write_all(b"29\n").unwrap();
    (&conn).read_exact(&mut [0u8; 2]).unwrap();
    log.wait_for(&format!("{} tcp T", conn.local_addr().unwrap()));
}

/// Help is per command, and a typo gets a suggestion, not the whole usage.
#[test]
fn help_is_per_command_and_a_typo_gets_a_suggestion() {
    let run = |args: &[&str]| Command::new(prime_binary()).args(args).output().unwrap();
    let serve = run(&["serve", "--help"]);
    let serve_help = String::from_utf8_lossy(&serve.stdout);
    assert!(serve.status.success() && serve_help.contains("--workers <N>"), "{serve_help}");
    let ask = run(&["ask", "--help"]);
    let ask_help = String::from_utf8_lossy(&ask.stdout);
    assert!(ask.status.success() && !ask_help.contains("--workers"), "ask's help is ask's: {ask_help}");
    let typo = run(&["serve", "tcp", "127.0.0.1:0", "--wrokers", "2"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("a similar argument exists: '--workers'"));
    let command = run(&["serv"]);
    assert_eq!(command.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&command.stderr).contains("a similar subcommand exists: 'serve'"));
}

/// `--framing lines` answers every line as the unframed service does, as
/// Python's `int()` reads it, however long: a prime padded far past the
/// framing's maximum (its digits across two pieces) is `T`, 8 MiB of digits
/// is `E`. Framed, the connection then goes on: the next line is answered.
#[test]
fn framed_prime_answers_over_long_lines_as_the_unframed_service_does() {
    use std::io::{BufRead, BufReader};
    // The framing's maximum with the default digit limit: 2 x 4300 + 1024.
    let max_line = 2 * 4300 + 1024;
    let lines: Vec<Vec<u8>> = vec![
        b"7\n".to_vec(),
        format!("17{}\n", " ".repeat(10_000)).into_bytes(),
        format!("{}1_000_003 \n", " ".repeat(max_line - 4)).into_bytes(),
        // Unframed, the service closes after this one: it will not read on.
        [vec![b'1'; 8 << 20], b"\n".to_vec()].concat(),
    ];
    let expected = ["T", "T", "T", "E"];
    let answers = |flags: &[&str], payload: Vec<u8>, count: usize| {
        let serve = Serve::start("tcp", "127.0.0.1:0", flags);
        let conn = TcpStream::connect(&serve.address).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut writer = conn.try_clone().unwrap();
        // The unframed service may close before it has read everything.
        let sending = std::thread::spawn(move || {
            let _ = writer.write_all(&payload);
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let mut reader = BufReader::new(conn);
        let mut got = Vec::new();
        for _ in 0..count {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            got.push(line.trim_end().to_string());
        }
        sending.join().unwrap();
        got
    };
    let unframed = answers(&[], lines.concat(), lines.len());
    assert_eq!(unframed, expected, "the unframed service");
    let garbage = format!("{}\n", "x".repeat(3 * max_line)).into_bytes();
    let framed_payload = [lines.concat(), garbage, b"5\n".to_vec()].concat();
    let framed = answers(&["--framing", "lines", "--workers", "2"], framed_payload, lines.len() + 2);
    assert_eq!(framed[..lines.len()], expected, "framed, as unframed");
    assert_eq!(framed[lines.len()..], ["E", "T"], "framed, the connection goes on");
}

/// `prime serve --metrics ADDR` (feature `metrics`): Python's `urllib`
/// scrapes `/metrics` and finds the server's counters, labelled with its
/// address and transport, matching the requests it answered.
#[cfg(feature = "metrics")]
#[test]
fn prime_serve_metrics_are_scraped_by_a_real_http_client() {
    let log = LogFile::new();
    let serve = Serve::start_logged(
        "tcp",
        "127.0.0.1:0",
        &["--metrics", "127.0.0.1:0", "--framing", "lines", "--workers", "2"],
        log.writer(),
    );
    log.wait_for("metrics on http://");
    let text = log.text();
    let url = text.lines().find_map(|l| l.strip_prefix("metrics on ")).unwrap().trim().to_string();
    assert_eq!(stream_exchange(&serve.address, b"17\n4\nx\n"), "T\nF\nE\n");
    let scrape = |url: &str| {
        let script = "import sys, urllib.request\nwith urllib.request.urlopen(sys.argv[1], timeout=20) as r:\n    sys.stdout.write(str(r.status) + '\\n' + r.headers['Content-Type'] + '\\n' + r.read().decode())";
        let out = Command::new("python3").args(["-c", script, url]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let label = format!("server=\"{}\"", serve.address);
    let value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label) && l.contains("transport=\"tcp\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    // A request is counted a moment after its answer is read.
    eventually("the three answers are counted", || value(&scrape(&url).1, "socketserver_served_total") == Some(3.0));
    let (ok, body, stderr) = scrape(&url);
    assert!(ok, "python: {stderr}");
    assert!(body.starts_with("200\ntext/plain; version=0.0.4\n"), "{body}");
    assert_eq!(value(&body, "socketserver_accepted_total"), Some(1.0), "{body}");
    assert_eq!(value(&body, "socketserver_errors_total"), Some(0.0), "{body}");
    assert_eq!(value(&body, "socketserver_active"), Some(0.0), "{body}");
    assert!(body.contains("# HELP socketserver_served_total Requests whose handler completed"), "{body}");
    assert!(
        body.lines().any(|l| l.starts_with("socketserver_request_duration_seconds") && l.contains(&label)),
        "{body}"
    );
    let (ok, missing, _) = scrape(&url.replace("/metrics", "/other"));
    assert!(!ok && missing.is_empty(), "a path other than /metrics is 404");
}

/// `prime serve --per-client-*`: a client past its connections is closed
/// at once and the log names it; settings the library refuses exit 2
/// naming the setting.
#[test]
fn prime_serve_per_client_limits_refuse_the_third_connection_and_bad_settings_exit_2() {
    let log = LogFile::new();
    let serve = Serve::start_logged(
        "tcp",
        "127.0.0.1:0",
        &["--per-client-connections", "2", "--timeout", "60", "--workers", "2"],
        log.writer(),
    );
    let connect = || {
        let conn = TcpStream::connect(&serve.address).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn
    };
    let held = [connect(), connect()];
    let mut third = connect();
    let mut got = Vec::new();
    // Closed without an answer (an end of stream, or a reset).
    assert!(third.read_to_end(&mut got).map_or(true, |_| got.is_empty()), "{got:?}");
    log.wait_for("client 127.0.0.1 holds its 2 connections: connection closed");
    drop(held);
    // The loop learns of the closes as they come; until then a connection
    // is refused, and may be reset (its request unread).
    eventually("served again once its connections closed", || {
        try_stream_exchange(&serve.address, b"17\n").is_ok_and(|answer| answer == "T\n")
    });

    for (flags, setting) in [
        (&["--per-client-connections", "0"][..], "per_client.connections"),
        (&["--per-client-rate", "0"][..], "per_client.rate"),
        (&["--per-client-rate", "10", "--per-client-burst", "0"][..], "per_client.burst"),
        (&["--per-client-rate", "10", "--client-prefix-v6", "129"][..], "per_client.ipv6_prefix"),
    ] {
        let out = Command::new(prime_binary()).args(["serve", "udp", "127.0.0.1:0"]).args(flags).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(setting), "{flags:?}: {stderr}");
    }
}
