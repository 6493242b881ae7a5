//! The three examples of Python's `socketserver` documentation, ported to
//! `examples/`, run as real processes; the TCP and UDP servers are asked by
//! the documentation's own Python clients.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::process::example_binary;

/// An example server whose stdout stays readable after its first line.
struct Example {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    port: String,
}

impl Example {
    fn start(name: &str) -> Example {
        let mut child = Command::new(example_binary(name))
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let address = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {first:?}"));
        let port = address.rsplit_once(':').unwrap().1.to_string();
        Example { child, lines, port }
    }

    fn next_line(&mut self) -> String {
        self.lines.next().unwrap().unwrap()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python client from the documentation, with HOST and PORT given.
fn python(script: &str, port: &str) -> Option<String> {
    let out = Command::new("python3").args(["-c", script, "127.0.0.1", port]).output().ok()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The documentation's client for `example` says what the documentation
/// shows, and the server prints the request.
fn the_documentations_client_is_answered(example: &str, client: &str) {
    let mut server = Example::start(example);
    let Some(out) = python(client, &server.port) else {
        eprintln!("skipped: python3 not found");
        return;
    };
    assert_eq!(out, "Sent:     hello world\nReceived: HELLO WORLD\n", "{example}");
    assert_eq!(server.next_line(), "127.0.0.1 wrote: hello world", "{example}");
}

#[test]
fn the_tcp_example_answers_the_documentations_client() {
    the_documentations_client_is_answered(
        "python_tcp",
        r#"
import socket, sys
HOST, PORT = sys.argv[1], int(sys.argv[2])
data = "hello world"
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.connect((HOST, PORT))
    sock.sendall(bytes(data + "\n", "utf-8"))
    received = str(sock.recv(1024), "utf-8")
print("Sent:     {}".format(data))
print("Received: {}".format(received))
"#,
    );
}

#[test]
fn the_udp_example_answers_the_documentations_client() {
    the_documentations_client_is_answered(
        "python_udp",
        r#"
import socket, sys
HOST, PORT = sys.argv[1], int(sys.argv[2])
data = "hello world"
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(20)
sock.sendto(bytes(data + "\n", "utf-8"), (HOST, PORT))
received = str(sock.recv(1024), "utf-8")
print("Sent:     {}".format(data))
print("Received: {}".format(received))
"#,
    );
}

#[test]
fn the_threaded_example_serves_three_clients_on_handler_threads_and_stops() {
    let out = Command::new(example_binary("python_threaded")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Server loop running in thread: server\n\
         Received: socketserver-handler: Hello World 1\n\
         Received: socketserver-handler: Hello World 2\n\
         Received: socketserver-handler: Hello World 3\n"
    );
}
