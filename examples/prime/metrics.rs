//! `prime serve --metrics ADDR` (feature `metrics`): the server's counters
//! for Prometheus. The crate records them through the `metrics` facade;
//! here a Prometheus recorder keeps them, and a second server of this
//! crate's answers scrapes of `/metrics` with their text. One HTTP request
//! per connection is all a scraper needs.

use std::io::{self, BufRead, Write};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use socketserver::{Request, TcpServer, WorkerPool};

/// Installs the Prometheus recorder and serves its text at
/// `http://ADDR/metrics` from a thread of its own; says where on stderr.
pub fn serve(addr: &str) -> Result<(), String> {
    let handle = PrometheusBuilder::new().install_recorder().map_err(|e| format!("--metrics: {e}"))?;
    // Two workers: a slow scraper does not hold up the next one.
    let mut server = TcpServer::builder(move |req: &mut Request<'_>| scrape(req, &handle))
        .dispatch(WorkerPool::new(2).into())
        .timeout(Some(std::time::Duration::from_secs(10)))
        .bind(addr)
        .map_err(|e| format!("--metrics: {e}"))?;
    eprintln!("metrics on http://{}/metrics", server.server_address());
    std::thread::spawn(move || server.serve_forever());
    Ok(())
}

/// Answers one HTTP request: the metrics for `GET /metrics`, 404 or 405
/// otherwise.
fn scrape(req: &mut Request<'_>, handle: &PrometheusHandle) -> io::Result<()> {
    let mut request_line = String::new();
    req.rfile.read_line(&mut request_line)?;
    // The headers say nothing a scrape needs; read them to the blank line.
    let mut header = String::new();
    while req.rfile.read_line(&mut header)? > 0 && !header.trim().is_empty() {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next().map(|t| t.split('?').next().unwrap_or(t))) {
        (Some("GET"), Some("/metrics")) => ("200 OK", handle.render()),
        (Some("GET"), _) => ("404 Not Found", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    write!(
        req.wfile,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
