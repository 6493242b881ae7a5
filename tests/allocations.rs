//! The hot path allocates nothing per request: a counting allocator tallies
//! the allocations made on the serving thread while it serves many requests.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, Write};

use common::*;
use socketserver::{Request, TcpServer, UdpServer};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Echoes the whole request without allocating.
fn echo_in_place(req: &mut Request<'_>) -> std::io::Result<()> {
    loop {
        let data = req.rfile.fill_buf()?;
        if data.is_empty() {
            return Ok(());
        }
        let n = data.len();
        req.wfile.write_all(data)?;
        req.rfile.consume(n);
    }
}

#[test]
fn serving_datagrams_allocates_nothing_per_request() {
    for batch in [1, 16] {
        let mut server = UdpServer::builder(echo_in_place).datagram_batch(batch).bind("127.0.0.1:0").unwrap();
        let address = server.server_address().clone();
        let client = std::thread::spawn(move || {
            let dir = temp_dir();
            let client = DatagramClient::new(&address, dir.path()).unwrap();
            for i in 0..1010 {
                assert_eq!(client.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
            }
        });
        for _ in 0..10 {
            server.handle_request().unwrap(); // warm-up: buffers reach their size
        }
        let before = allocations();
        for _ in 0..1000 {
            server.handle_request().unwrap();
        }
        let during = allocations() - before;
        client.join().unwrap();
        assert_eq!(during, 0, "batch {batch}: {during} allocations in 1000 datagram requests");
    }
}

#[test]
fn a_stream_connection_allocates_per_connection_not_per_request() {
    let mut server = TcpServer::bind("127.0.0.1:0", echo_in_place).unwrap();
    let address = server.server_address().clone();
    let client = std::thread::spawn(move || {
        let mut conn = StreamClient::connect(&address).unwrap();
        for i in 0..1000 {
            assert_eq!(conn.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
        }
    });
    let before = allocations();
    server.handle_request().unwrap(); // the whole connection: 1000 requests
    let during = allocations() - before;
    client.join().unwrap();
    assert!(during < 10, "{during} allocations for one connection of 1000 requests");
}
