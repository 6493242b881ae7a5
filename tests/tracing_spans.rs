//! With the `tracing` feature, every request runs inside a `request` span
//! that carries the peer, the server address and the kind (README,
//! "Optional features").
#![cfg(feature = "tracing")]

mod common;

use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use socketserver::{Request, TcpServer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records each span's name and fields, and the span each event was in.
#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<Vec<(String, String)>>,
    events: Mutex<Vec<String>>,
    current: Mutex<Vec<u64>>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl Subscriber for &'static Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        self.spans.lock().unwrap().push((span.metadata().name().to_string(), fields.0));
        Id::from_u64(self.next.fetch_add(1, Ordering::SeqCst) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let inside = self.current.lock().unwrap().last().copied();
        self.events.lock().unwrap().push(format!("{} in span {inside:?}", fields.0));
    }
    fn enter(&self, span: &Id) {
        self.current.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.current.lock().unwrap().pop();
    }
}

#[test]
fn each_request_runs_in_a_span_naming_peer_server_and_kind() {
    let recorder: &'static Recorder = Box::leak(Box::default());
    tracing::subscriber::set_global_default(recorder).unwrap();
    let handler = |req: &mut Request<'_>| {
        tracing::info!("handling");
        std::io::Write::write_all(&mut req.wfile, b"done\n")
    };
    let running = Running::start(TcpServer::bind("127.0.0.1:0", handler).unwrap());
    let mut client = StreamClient::connect(&running.address).unwrap();
    assert_eq!(client.ask("x\n").unwrap(), "done\n");
    let peer = match &client {
        StreamClient::Tcp(tcp) => tcp.local_addr().unwrap(),
        StreamClient::Unix(_) => unreachable!(),
    };
    let server = running.address.to_string();
    running.stop().unwrap();

    let spans = recorder.spans.lock().unwrap().clone();
    let expected = format!("peer={peer} server={server} kind=Stream ");
    assert!(spans.iter().any(|(name, fields)| name == "request" && *fields == expected), "{spans:?}");
    let events = recorder.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| e.contains("handling") && e.contains("in span Some(")), "{events:?}");
}
