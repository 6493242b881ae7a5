//! Zero-copy file sending: `Writer::sendfile` in-process, and the
//! `fileserve` example as a real process.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::process::*;
use common::*;
use socketserver::{Request, TcpServer, UdpServer, UnixStreamServer};

/// A file of `len` pseudo-random bytes in `dir`, and its contents.
fn make_file(dir: &std::path::Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let path = dir.join(format!("data-{}", unique()));
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[test]
fn a_64_mib_file_through_fileserve_arrives_byte_identical() {
    let dir = temp_dir();
    let (path, data) = make_file(dir.path(), 64 << 20);
    let serve = Serve::from_command(
        Command::new(example_binary("fileserve"))
            .args([path.to_str().unwrap(), "tcp://127.0.0.1:0"])
            .stderr(std::process::Stdio::null()),
    );
    // It announces its endpoint, in the form its command line takes.
    let address = serve.address.strip_prefix("tcp://").unwrap_or_else(|| panic!("announced {}", serve.address));
    assert!(matches!(serve.address.parse(), Ok(socketserver::Endpoint::Tcp(_))), "{}", serve.address);
    for _ in 0..2 {
        let mut client = TcpStream::connect(address).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut got = Vec::with_capacity(data.len());
        client.read_to_end(&mut got).unwrap();
        assert!(got == data, "received {} bytes, not the file's {}", got.len(), data.len());
    }
}

#[test]
fn ranges_and_what_was_written_before_arrive_in_order_on_every_transport() {
    let dir = temp_dir();
    let (path, data) = make_file(dir.path(), 100_000);
    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    let handler = move |req: &mut Request<'_>| {
        req.wfile.write_all(b"HEAD")?;
        let sent = req.wfile.sendfile(&file, 1000, Some(5000))?;
        assert_eq!(sent, 5000);
        // Past the end: only what exists is sent.
        let tail = req.wfile.sendfile(&file, 99_990, Some(100))?;
        assert_eq!(tail, 10);
        req.wfile.write_all(b"TAIL")
    };
    let mut expected = b"HEAD".to_vec();
    expected.extend_from_slice(&data[1000..6000]);
    expected.extend_from_slice(&data[99_990..]);
    expected.extend_from_slice(b"TAIL");

    let tcp = Running::start(TcpServer::bind("127.0.0.1:0", handler.clone()).unwrap());
    let unix = Running::start(UnixStreamServer::bind(dir.path().join("f.sock"), handler.clone()).unwrap());
    for running in [&tcp, &unix] {
        let mut client = StreamClient::connect(&running.address).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert!(got == expected, "{}: {} bytes", running.address, got.len());
    }
    let udp = Running::start(UdpServer::bind("127.0.0.1:0", handler).unwrap());
    let client = DatagramClient::new(&udp.address, dir.path()).unwrap();
    client.send(b"x").unwrap();
    assert!(client.recv().unwrap() == expected, "one reply datagram with the range");
}

#[test]
fn a_peer_that_leaves_halfway_costs_one_log_line() {
    let dir = temp_dir();
    let (path, data) = make_file(dir.path(), 32 << 20);
    let log_path = dir.path().join("stderr");
    let serve = Serve::from_command(
        Command::new(example_binary("fileserve"))
            .args([path.to_str().unwrap(), "tcp://127.0.0.1:0"])
            .stderr(std::fs::File::create(&log_path).unwrap()),
    );
    let address = serve.address.trim_start_matches("tcp://");
    let mut quitter = TcpStream::connect(address).unwrap();
    let mut first = vec![0u8; 1 << 20];
    quitter.read_exact(&mut first).unwrap();
    drop(quitter); // unread data: the kernel resets the connection

    let mut next = TcpStream::connect(address).unwrap();
    let mut got = Vec::new();
    next.read_to_end(&mut got).unwrap();
    assert!(got == data, "the next client still gets the whole file");
    eventually("the failed send is logged", || std::fs::read_to_string(&log_path).unwrap().contains("ERROR"));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("ERROR")).count(), 1, "{log}");
}
