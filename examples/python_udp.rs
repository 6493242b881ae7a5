//! Python's `socketserver` documentation, "socketserver.UDPServer Example",
//! ported: each datagram is printed and sent back in upper case.
//!
//! ```text
//! cargo run --example python_udp [ADDR]    ADDR defaults to Python's localhost:9999
//! ```
//! The first stdout line is `listening on ADDR`; one line per datagram
//! follows: `{client ip} wrote: {data}`.

use std::io::{self, BufRead, Write};

use socketserver::{Request, RequestHandler, UdpServer};

/// Python's `MyUDPHandler(socketserver.BaseRequestHandler)`.
struct MyUdpHandler;

impl RequestHandler for MyUdpHandler {
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        // data = self.request[0].strip(): the datagram is all of rfile.
        let data = req.rfile.fill_buf()?.trim_ascii().to_vec();
        let client = req.client_address().as_inet().map_or("?".to_string(), |a| a.ip().to_string());
        println!("{client} wrote: {}", String::from_utf8_lossy(&data));
        // socket.sendto(data.upper(), self.client_address): what is written
        // to wfile goes back to the sender as one datagram.
        req.wfile.write_all(&data.to_ascii_uppercase())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "localhost:9999".into());
    let mut server = UdpServer::bind(addr.as_str(), MyUdpHandler)?;
    println!("listening on {}", server.server_address());
    io::stdout().flush()?;
    server.serve_forever()?;
    Ok(())
}
