//! The comparison table: printed, and written as CSV and as an SVG chart.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::load::Stats;

pub struct Row {
    pub scenario: String,
    pub server: String,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_request: f64,
    pub lost: u64,
    pub wrong: u64,
    /// The server's system calls per request (all, futex, epoll_ctl); NaN
    /// when not counted.
    pub syscalls: [f64; 3],
    requests: u64,
}

impl Row {
    pub fn new(scenario: &str, server: &str, mut stats: Stats, cpu_seconds: f64) -> Row {
        Row {
            scenario: scenario.into(),
            server: server.into(),
            per_second: stats.per_second(),
            p50_us: stats.percentile(0.5),
            p99_us: stats.percentile(0.99),
            cpu_us_per_request: cpu_seconds * 1e6 / stats.requests.max(1) as f64,
            lost: stats.lost,
            wrong: stats.wrong,
            syscalls: [f64::NAN; 3],
            requests: stats.requests,
        }
    }

    /// Records what the server's process made in system calls, per request.
    pub fn count_syscalls(&mut self, counts: Option<crate::syscalls::Counts>) {
        if let Some(c) = counts {
            let per = |n: u64| n as f64 / self.requests.max(1) as f64;
            self.syscalls = [per(c.total), per(c.futex), per(c.epoll_ctl)];
        }
    }
}

fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches").join("results")
}

/// The reference every ratio is against: the std loop of the same
/// scenario, or (through a balancer) the direct connection.
fn reference<'a>(rows: &'a [Row], scenario: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.scenario == scenario && (r.server.starts_with("std-") || r.server.starts_with("direct-")))
}

pub fn print_and_save(rows: &mut [Row], extras: &[(String, String)]) {
    let header = "scenario,server,requests_per_s,vs_std,p50_us,p99_us,cpu_us_per_request,cpu_vs_std,lost,wrong,\
                  syscalls_per_request,futex_per_request,epoll_ctl_per_request";
    let mut csv = format!("{header}\n");
    println!(
        "\n{:<14} {:<24} {:>11} {:>7} {:>8} {:>8} {:>9} {:>8} {:>6} {:>6} {:>7} {:>7} {:>7}",
        "scenario",
        "server",
        "req/s",
        "vs std",
        "p50 µs",
        "p99 µs",
        "CPU µs/r",
        "CPU/std",
        "lost",
        "wrong",
        "sys/r",
        "futex/r",
        "ctl/r"
    );
    for row in rows.iter() {
        let (speed, cpu) = reference(rows, &row.scenario).map_or((f64::NAN, f64::NAN), |r| {
            (row.per_second / r.per_second, row.cpu_us_per_request / r.cpu_us_per_request)
        });
        let cells = [
            row.scenario.clone(),
            row.server.clone(),
            format!("{:.0}", row.per_second),
            format!("{speed:.3}"),
            format!("{:.0}", row.p50_us),
            format!("{:.0}", row.p99_us),
            format!("{:.3}", row.cpu_us_per_request),
            format!("{cpu:.3}"),
            row.lost.to_string(),
            row.wrong.to_string(),
            format!("{:.3}", row.syscalls[0]),
            format!("{:.3}", row.syscalls[1]),
            format!("{:.3}", row.syscalls[2]),
        ];
        let widths = [14, 24, 11, 7, 8, 8, 9, 8, 6, 6, 7, 7, 7];
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| if i < 2 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        println!("{}", line.join(" "));
        let _ = writeln!(csv, "{}", cells.join(","));
    }
    println!();
    for (name, value) in extras {
        println!("{name:<52} {value}");
        let _ = writeln!(csv, "extra,{name},{value},,,,,,,,,,");
    }
    let dir = results_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("compare.csv"), &csv))
        .and_then(|()| std::fs::write(dir.join("compare.svg"), svg(rows)));
    match written {
        Ok(()) => println!("\nwritten: {}/compare.csv and compare.svg", dir.display()),
        Err(e) => eprintln!("cannot write results to {}: {e}", dir.display()),
    }
}

/// Horizontal bars of requests per second, relative to the std loop of each
/// scenario (1.0 = the std loop).
fn svg(rows: &[Row]) -> String {
    let bar_height = 18.0;
    let label_width = 330.0;
    let scale = 260.0; // pixels for a ratio of 1.0
    let height = 40.0 + rows.len() as f64 * (bar_height + 6.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-weight=\"bold\">Requests per second, relative to a hand-written std loop (= 1.0)</text>\n",
        w = label_width + scale * 1.6 + 80.0
    );
    let x0 = label_width;
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"30\" x2=\"{}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"4\"/>",
        x0 + scale,
        x0 + scale,
        height
    );
    for (i, row) in rows.iter().enumerate() {
        let ratio = reference(rows, &row.scenario).map_or(0.0, |r| row.per_second / r.per_second);
        let y = 34.0 + i as f64 * (bar_height + 6.0);
        let color = match row.server.split('-').next() {
            Some("socketserver") => "#2b6cb0",
            Some("std") => "#718096",
            _ => "#d69e2e",
        };
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{ty}\">{} · {}</text>\n<rect x=\"{x0}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_height}\" fill=\"{color}\"/>\n\
             <text x=\"{tx:.1}\" y=\"{ty}\">{ratio:.2} ({:.0}/s)</text>",
            row.scenario,
            row.server,
            row.per_second,
            ty = y + 13.0,
            w = (ratio * scale).max(1.0),
            tx = x0 + (ratio * scale).max(1.0) + 6.0,
        );
    }
    out.push_str("</svg>\n");
    out
}
