//! `OnSignals` in a real process, with real signals (README, "Stopping"):
//! this test binary signals itself. Alone in its binary, so no other
//! test's process sees the signal. (The second signal, which exits the
//! process, and SIGHUP restarts are tested on `prime serve` in
//! `stopping.rs` and `restarts.rs`.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use common::IO_TIMEOUT;
use socketserver::{Request, TcpServer};

#[test]
fn sigterm_stops_the_server_after_its_running_request_is_answered() {
    let (started, handler_started) = mpsc::channel();
    let (finish, may_finish) = mpsc::channel::<()>();
    let (started, may_finish) = (std::sync::Mutex::new(started), std::sync::Mutex::new(may_finish));
    let handler = move |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        started.lock().unwrap().send(()).unwrap();
        may_finish.lock().unwrap().recv_timeout(IO_TIMEOUT).unwrap();
        write!(req.wfile, "done {line}")
    };
    let mut server = TcpServer::threading("127.0.0.1:0", handler).unwrap();
    let address = server.server_address().as_inet().unwrap();
    server.shutdown_handle().stop_on_signals().unwrap();
    let serving = std::thread::spawn(move || {
        let result = server.serve_forever();
        // Returned, not dropped here: closing waits for the running request.
        (result, server.shutdown_handle().is_aborted(), server)
    });

    let mut client = TcpStream::connect(address).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"1\n").unwrap();
    handler_started.recv_timeout(IO_TIMEOUT).unwrap();
    // Were the handler not installed, SIGTERM would end this process here.
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !serving.is_finished() {
        assert!(std::time::Instant::now() < deadline, "serve_forever did not return after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (result, aborted, server) = serving.join().unwrap();
    result.unwrap();
    assert!(!aborted, "one signal drains; it does not abort");
    // The request running when the signal came is still answered.
    finish.send(()).unwrap();
    let mut answer = String::new();
    BufReader::new(client).read_line(&mut answer).unwrap();
    assert_eq!(answer, "done 1\n");
    drop(server);
}
