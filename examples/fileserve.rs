//! Sends one file to every client that connects, then closes: zero-copy on
//! Linux (sendfile(2) through `Writer::sendfile`).
//!
//! ```text
//! cargo run --example fileserve -- PATH ADDR     ADDR: HOST:PORT, or a Unix socket path
//! ```
//! The first stdout line is `listening on ADDR`. SIGINT/SIGTERM stop it.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use socketserver::{Request, ShutdownHandle, TcpServer, UnixStreamServer};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, addr] = &args[..] else {
        eprintln!("usage: fileserve PATH ADDR");
        return ExitCode::from(2);
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
    let served = if addr.contains('/') {
        UnixStreamServer::threading(addr.as_str(), handler)
            .map(|mut s| run(s.shutdown_handle(), s.server_address().to_string(), move || s.serve_forever()))
    } else {
        TcpServer::threading(addr.as_str(), handler)
            .map(|mut s| run(s.shutdown_handle(), s.server_address().to_string(), move || s.serve_forever()))
    };
    match served.and_then(|result| result) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fileserve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Announces the address, arranges for SIGINT/SIGTERM to stop the server, serves.
fn run(
    stop: ShutdownHandle,
    address: String,
    serve: impl FnOnce() -> socketserver::Result<()>,
) -> socketserver::Result<()> {
    match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    stop.request_shutdown();
                }
            });
        }
        Err(e) => eprintln!("fileserve: no signal handling: {e}"),
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {address}").and_then(|()| stdout.flush());
    serve()
}
