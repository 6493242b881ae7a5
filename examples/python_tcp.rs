//! Python's `socketserver` documentation, "socketserver.TCPServer Example",
//! ported: each connection's first message is printed and sent back in
//! upper case.
//!
//! ```text
//! cargo run --example python_tcp [ADDR]    ADDR defaults to Python's localhost:9999
//! ```
//! The first stdout line is `listening on ADDR`; one line per request
//! follows: `{client ip} wrote: {data}`.

use std::io::{self, Read, Write};

use socketserver::{Request, RequestHandler, TcpServer};

/// Python's `MyTCPHandler(socketserver.BaseRequestHandler)`.
struct MyTcpHandler;

impl RequestHandler for MyTcpHandler {
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        // self.data = self.request.recv(1024).strip()
        let mut buf = [0u8; 1024];
        let n = req.rfile.read(&mut buf)?;
        let data = buf[..n].trim_ascii();
        let client = req.client_address().as_inet().map_or("?".to_string(), |a| a.ip().to_string());
        println!("{client} wrote: {}", String::from_utf8_lossy(data));
        // self.request.sendall(self.data.upper())
        req.wfile.write_all(&data.to_ascii_uppercase())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "localhost:9999".into());
    let mut server = TcpServer::bind(addr.as_str(), MyTcpHandler)?;
    println!("listening on {}", server.server_address());
    io::stdout().flush()?;
    // Activate the server; this will keep running until you interrupt the
    // program with Ctrl-C.
    server.serve_forever()?;
    Ok(())
}
