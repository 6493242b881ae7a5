//! Prints what a server needs to listen beyond loopback: the host's name,
//! its addresses, and the name each address maps back to.
//!
//! ```text
//! cargo run --example hostinfo [NAME]
//! hostname <name>
//! address <ip>          (one line per address)
//! reverse <ip> <name>   (one line per address that has a name)
//! ```

use std::process::ExitCode;

use socketserver::host;

fn main() -> ExitCode {
    let result = match std::env::args().nth(1) {
        Some(name) => host::lookup_host(&name).map(|info| (info.name, info.addresses)),
        // The machine's own name as uname gives it; it may not resolve at all
        // (no entry in /etc/hosts or DNS), which leaves it without addresses.
        None => host::hostname().map(|name| {
            let addresses = host::lookup_host(&name).map(|info| info.addresses).unwrap_or_else(|e| {
                eprintln!("hostinfo: {e}");
                Vec::new()
            });
            (name, addresses)
        }),
    };
    let (name, addresses) = match result {
        Ok(found) => found,
        Err(e) => {
            eprintln!("hostinfo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("hostname {name}");
    for ip in &addresses {
        println!("address {ip}");
    }
    for ip in &addresses {
        match host::lookup_addr(*ip) {
            Ok(reverse) => println!("reverse {ip} {}", reverse.name),
            Err(e) => eprintln!("hostinfo: {e}"),
        }
    }
    ExitCode::SUCCESS
}
