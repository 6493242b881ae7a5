//! HAProxy and nginx (stream module) as real load balancers on loopback,
//! started from the configs in examples/deploy/ with their addresses
//! replaced; shared by tests/balancers.rs and the compare bench.

use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a balancer may take to start accepting.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Which balancer, and the config it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// `examples/deploy/haproxy.cfg`: TCP, PROXY v2 to the backends.
    Haproxy,
    /// `examples/deploy/nginx-stream.conf`: TCP with PROXY v1, and UDP.
    Nginx,
}

impl Front {
    fn config(self) -> &'static str {
        match self {
            Front::Haproxy => "haproxy.cfg",
            Front::Nginx => "nginx-stream.conf",
        }
    }

    /// The frontend and the three TCP and three UDP backend addresses the
    /// shipped config names, to be replaced.
    fn placeholders(self) -> (&'static str, [&'static str; 3], [&'static str; 3]) {
        match self {
            Front::Haproxy => ("127.0.0.1:7000", ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"], [""; 3]),
            Front::Nginx => (
                "127.0.0.1:7100",
                ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"],
                ["127.0.0.1:7111", "127.0.0.1:7112", "127.0.0.1:7113"],
            ),
        }
    }

    /// Whether the balancer is installed here.
    pub fn available(self) -> bool {
        let program = match self {
            Front::Haproxy => "haproxy",
            Front::Nginx => "nginx",
        };
        Command::new(program).arg("-v").output().is_ok_and(|o| o.status.success())
    }
}

/// A running balancer; stopped when dropped.
pub struct Balancer {
    child: Child,
    dir: tempfile::TempDir,
    /// Where clients connect (TCP, and UDP for nginx).
    pub address: String,
}

impl Balancer {
    /// Starts `front` in front of `tcp` (and, nginx, `udp`) backend
    /// addresses, up to three of each; the unused server lines of the
    /// shipped config are left out (with none given, the config's own
    /// addresses stay, unused). Waits (bounded) until it accepts.
    pub fn start(front: Front, tcp: &[String], udp: &[String]) -> Balancer {
        let dir = tempfile::Builder::new().prefix("socketserver-balancer").tempdir().unwrap();
        let port = free_tcp_and_udp_port();
        let address = format!("127.0.0.1:{port}");
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy").join(front.config());
        let (frontend, tcp_slots, udp_slots) = front.placeholders();
        let mut config = std::fs::read_to_string(&template).unwrap();
        for (slots, given) in [(tcp_slots, tcp), (udp_slots, udp)].into_iter().filter(|(_, given)| !given.is_empty()) {
            for (i, slot) in slots.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
                config = match given.get(i) {
                    Some(backend) => config.replace(slot, backend),
                    None => config.lines().filter(|l| !l.contains(slot)).map(|l| format!("{l}\n")).collect(),
                };
            }
        }
        let config = config.replace(frontend, &address);
        let path = dir.path().join(front.config());
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("balancer.log")).unwrap();
        let mut command = match front {
            Front::Haproxy => {
                let mut c = Command::new("haproxy");
                c.arg("-f").arg(&path).arg("-db");
                c
            }
            Front::Nginx => {
                let mut c = Command::new("nginx");
                let globals = format!("daemon off; master_process off; pid {}/nginx.pid;", dir.path().display());
                c.arg("-p").arg(dir.path()).arg("-c").arg(&path).arg("-e").arg(dir.path().join("error.log"));
                c.args(["-g", &globals]);
                c
            }
        };
        let child = command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let mut balancer = Balancer { child, dir, address };
        balancer.wait_until_accepting();
        balancer
    }

    fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(&self.address).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the balancer exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "the balancer never accepted: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The balancer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the balancer logged.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read("balancer.log") + &read("error.log")
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for both TCP and UDP (nginx listens on both).
fn free_tcp_and_udp_port() -> u16 {
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for TCP and UDP");
}
