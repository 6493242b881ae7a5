//! Host lookups against this machine's own resolver (loopback names only).

mod common;

use std::net::IpAddr;
use std::process::Command;

use common::process::example_binary;
use socketserver::{Error, host};

#[test]
fn hostname_is_what_uname_prints() {
    let uname = Command::new("uname").arg("-n").output().unwrap();
    assert_eq!(host::hostname().unwrap(), String::from_utf8_lossy(&uname.stdout).trim());
}

#[test]
fn localhost_resolves_to_a_loopback_address() {
    let info = host::lookup_host("localhost").unwrap();
    let loopback: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    assert!(info.addresses.iter().any(|ip| loopback.contains(ip)), "{info:?}");
}

#[test]
fn the_loopback_address_has_a_name() {
    let info = host::lookup_addr("127.0.0.1".parse().unwrap()).unwrap();
    assert!(!info.name.is_empty());
    assert!(info.addresses.contains(&"127.0.0.1".parse().unwrap()), "{info:?}");
}

#[test]
fn an_unknown_name_is_a_clear_error() {
    let err = host::lookup_host("no-such-host.invalid").unwrap_err();
    assert!(matches!(&err, Error::Lookup { message, .. } if !message.is_empty()), "{err:?}");
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
}

#[test]
fn hostinfo_prints_its_three_kinds_of_line() {
    let out = Command::new(example_binary("hostinfo")).arg("localhost").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("hostname localhost"));
    let mut addresses = 0;
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields[..] {
            ["address", ip] => {
                ip.parse::<IpAddr>().unwrap();
                addresses += 1;
            }
            ["reverse", ip, name] => {
                ip.parse::<IpAddr>().unwrap();
                assert!(!name.is_empty());
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert!(addresses > 0, "{text}");

    let out = Command::new(example_binary("hostinfo")).arg("no-such-host.invalid").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-host.invalid"));
}

#[test]
fn hostinfo_without_a_name_describes_this_machine() {
    let out = Command::new(example_binary("hostinfo")).output().unwrap();
    assert!(out.status.success());
    let first = String::from_utf8(out.stdout).unwrap().lines().next().unwrap_or_default().to_string();
    assert_eq!(first, format!("hostname {}", host::hostname().unwrap()));
}
