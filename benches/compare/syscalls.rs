//! System calls per request, counted on the server process by `perf stat`
//! with the kernel's syscall tracepoints: every thread the server ever has
//! (the counters are inherited), at a few nanoseconds a call, so the run's
//! other figures stay valid. The count covers the server's whole life
//! (start-up and exit are a few hundred calls against hundreds of
//! thousands). Skipped (`None`) where `perf` is missing or not allowed;
//! `COMPARE_SYSCALLS=0` turns it off.

use std::path::PathBuf;
use std::process::Command;

/// What the server's process made, in system calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub total: u64,
    pub futex: u64,
    pub epoll_ctl: u64,
}

/// The events counted, in `Counts` order.
const EVENTS: [&str; 3] = ["raw_syscalls:sys_enter", "syscalls:sys_enter_futex", "syscalls:sys_enter_epoll_ctl"];

/// Whether this run counts: `perf` runs and may read the tracepoints.
pub fn enabled() -> bool {
    if std::env::var("COMPARE_SYSCALLS").is_ok_and(|v| v == "0") {
        return false;
    }
    Command::new("perf")
        .args(["stat", "-x,", "-e", EVENTS[0], "--", "true"])
        .output()
        .is_ok_and(|out| out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("not supported"))
}

/// Where a counted server's figures are written when it exits.
pub fn output_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("compare-syscalls-{}-{name}.csv", std::process::id()))
}

/// `perf stat` arguments that run the rest of the command line counted
/// into `out`.
pub fn perf_prefix(out: &std::path::Path) -> Vec<String> {
    let mut args = vec!["stat".to_string(), "-x,".into(), "-o".into(), out.display().to_string()];
    for event in EVENTS {
        args.extend(["-e".to_string(), event.to_string()]);
    }
    args.push("--".into());
    args
}

/// The counts `perf stat -x,` wrote to `out`.
pub fn read(out: &std::path::Path) -> Option<Counts> {
    let text = std::fs::read_to_string(out).ok()?;
    let _ = std::fs::remove_file(out);
    let count = |event: &str| {
        text.lines()
            .find(|line| line.split(',').nth(2) == Some(event))
            .and_then(|line| line.split(',').next()?.parse::<u64>().ok())
    };
    Some(Counts { total: count(EVENTS[0])?, futex: count(EVENTS[1])?, epoll_ctl: count(EVENTS[2])? })
}
