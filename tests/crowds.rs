//! Many connections at once (README, "Many connections"): thousands of
//! silent ones held in the serving loop cost no worker, keep no real client
//! waiting, and are closed at shutdown with the server still stopping at
//! once. The crowd lives in a Python process of its own (its fd limit
//! raised there), connecting from several loopback addresses.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};

use common::IO_TIMEOUT;
use common::process::*;

/// Opens `sys.argv[2]` connections to `127.0.0.1:sys.argv[1]` from
/// 127.0.0.2, .3, ... (a few thousand each), says `open N`, then on a line
/// on stdin waits for every connection to be closed by the server and says
/// `closed N` (how many saw the end of the stream within 20 s).
const CROWD: &str = r#"
import resource, selectors, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
port, count = int(sys.argv[1]), int(sys.argv[2])
conns = []
for i in range(count):
    s = socket.socket()
    s.bind(("127.0.0.%d" % (2 + i // 4000), 0))
    s.connect(("127.0.0.1", port))
    conns.append(s)
print("open", len(conns), flush=True)
sys.stdin.readline()
sel = selectors.DefaultSelector()
for s in conns:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
closed, deadline = 0, time.time() + 20
while closed < len(conns) and time.time() < deadline:
    for key, _ in sel.select(timeout=1):
        try:
            data = key.fileobj.recv(1)
        except ConnectionResetError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            closed += 1
print("closed", closed, flush=True)
"#;

struct Crowd {
    child: Child,
    lines: BufReader<std::process::ChildStdout>,
}

impl Crowd {
    /// `count` silent connections to `address`, all open when this returns.
    fn open(address: &str, count: usize) -> Crowd {
        let port = address.rsplit_once(':').unwrap().1;
        let mut child = Command::new("python3")
            .args(["-c", CROWD, port, &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("open {count}"));
        Crowd { child, lines }
    }

    /// How many connections the server closed (waits up to 20 s for all).
    fn closed(mut self) -> usize {
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        line.trim().strip_prefix("closed ").unwrap().parse().unwrap()
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `prime serve tcp` with room for a crowd: its fd limit raised to the
/// machine's hard limit.
fn serve_for_a_crowd(flags: &str) -> Serve {
    let script = format!("ulimit -n \"$(ulimit -H -n)\" && exec \"$0\" serve tcp 127.0.0.1:0 {flags}");
    Serve::from_command(Command::new("sh").arg("-c").arg(script).arg(prime_binary()).stderr(Stdio::null()))
}

fn ask(address: &str) -> String {
    let mut client = TcpStream::connect(address).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"17\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn five_thousand_silent_connections_keep_no_client_waiting_and_close_at_shutdown() {
    let mut serve = serve_for_a_crowd("--workers 2 --timeout 300");
    let crowd = Crowd::open(&serve.address, 5_000);
    // Held in the loop, they take no worker: a pool of two answers at once.
    for _ in 0..20 {
        assert_eq!(ask(&serve.address), "T\n");
    }
    assert!(fds(serve.pid()) > 5_000, "the crowd is held open by the server");
    let status = serve.signal("TERM");
    assert!(status.success(), "{status}");
    assert_eq!(crowd.closed(), 5_000, "every held connection was closed at shutdown");
}
