//! Python's `socketserver` documentation, "Asynchronous Mixins" example,
//! ported: a threading TCP server answers three clients from the same
//! process, each answer naming the thread that served it; then it shuts
//! down.
//!
//! ```text
//! cargo run --example python_threaded
//! ```
//! Prints `Server loop running in thread: ...`, then one `Received: ...`
//! line per client.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use socketserver::{Request, RequestHandler, TcpServer};

/// Python's `ThreadedTCPRequestHandler`.
struct ThreadedTcpRequestHandler;

impl RequestHandler for ThreadedTcpRequestHandler {
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        let mut data = [0u8; 1024];
        let n = req.rfile.read(&mut data)?;
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        write!(req.wfile, "{name}: {}", String::from_utf8_lossy(&data[..n]))
    }
}

/// Python's `client(ip, port, message)`.
fn client(addr: SocketAddr, message: &str) -> io::Result<()> {
    let mut sock = TcpStream::connect(addr)?;
    sock.write_all(message.as_bytes())?;
    let mut response = [0u8; 1024];
    let n = sock.read(&mut response)?;
    println!("Received: {}", String::from_utf8_lossy(&response[..n]));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Port 0 means to select an arbitrary unused port.
    let mut server = TcpServer::threading("localhost:0", ThreadedTcpRequestHandler)?;
    let addr = server.server_address().as_inet().ok_or("not an inet address")?;
    let stop = server.shutdown_handle();
    // Start a thread with the server; that thread starts one more thread
    // for each request.
    let serving = std::thread::Builder::new().name("server".into()).spawn(move || server.serve_forever())?;
    println!("Server loop running in thread: server");

    client(addr, "Hello World 1")?;
    client(addr, "Hello World 2")?;
    client(addr, "Hello World 3")?;

    stop.shutdown();
    serving.join().map_err(|_| "the server thread panicked")??;
    Ok(())
}
