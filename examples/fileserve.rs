//! Sends one file to every client that connects, then closes: zero-copy on
//! Linux (sendfile(2) through `Writer::sendfile`).
//!
//! ```text
//! cargo run --example fileserve -- PATH ENDPOINT
//! ```
//! ENDPOINT says where, transport included: `tcp://127.0.0.1:9000`,
//! `unix:/tmp/file.sock`, or `udp://...` for files that fit in a datagram.
//! The first stdout line is `listening on ADDR`. SIGINT/SIGTERM stop it.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use socketserver::{AnyServer, Endpoint, Request, RequestHandler};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, endpoint] = &args[..] else {
        eprintln!("usage: fileserve PATH ENDPOINT   (ENDPOINT: tcp://HOST:PORT, unix:PATH, ...)");
        return ExitCode::from(2);
    };
    let endpoint: Endpoint = match endpoint.parse() {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!("fileserve: {e}");
            return ExitCode::from(2);
        }
    };
    let file = match File::open(path) {
        Ok(file) => Arc::new(file),
        Err(e) => {
            eprintln!("fileserve: cannot open {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // sendfile reads at an explicit offset, so every handler thread can share one File.
    let handler = move |req: &mut Request<'_>| req.wfile.sendfile(&file, 0, None).map(drop);
    match AnyServer::builder(handler).threading().bind(&endpoint).and_then(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fileserve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Announces the address, arranges for SIGINT/SIGTERM to stop the server
/// (the library's `OnSignals`: a drain, and a second signal cuts it), serves.
fn serve<H: RequestHandler>(mut server: AnyServer<H>) -> socketserver::Result<()> {
    if let Err(e) = server.shutdown_handle().stop_on_signals() {
        eprintln!("fileserve: no signal handling: {e}");
    }
    let mut stdout = std::io::stdout();
    // The endpoint, as the command line takes it (`tcp://127.0.0.1:PORT`,
    // with the port the OS chose), so the line can be handed back as is.
    let _ = writeln!(stdout, "listening on {}", server.endpoint()).and_then(|()| stdout.flush());
    server.serve_forever()
}
