//! An established TLS session, as a connection's handler uses it: blocking
//! reads and writes of plaintext over the socket, under the connection's
//! timeouts (which the caller's `wire` applies to every socket operation).

use std::cell::RefCell;
use std::io::{self, Read, Write};

use rustls::ServerConnection;

use super::TlsInfo;

pub(crate) struct Session {
    tls: RefCell<ServerConnection>,
    info: TlsInfo,
}

impl Session {
    /// The session of a connection whose handshake is complete.
    pub(crate) fn new(tls: ServerConnection) -> Self {
        let info = TlsInfo::of(&tls);
        Session { tls: RefCell::new(tls), info }
    }

    pub(crate) fn info(&self) -> &TlsInfo {
        &self.info
    }

    /// Whether plaintext is already in, read off the socket with the end of
    /// the handshake: polling the socket would not show it.
    pub(crate) fn has_plaintext(&self) -> bool {
        self.tls.borrow_mut().process_new_packets().is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
    }

    /// Reads plaintext into `buf`, reading TLS records from `wire` as
    /// needed. 0 at the end of input, clean (`close_notify`) or not.
    pub(crate) fn read(&self, buf: &mut [u8], wire: &mut (impl Read + Write)) -> io::Result<usize> {
        let mut tls = self.tls.borrow_mut();
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: for the
                // handler, the end of input, as on a plain connection.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // A key update may want its answer before more data comes.
            send_pending(&mut tls, wire)?;
            tls.read_tls(wire)?;
            if let Err(e) = tls.process_new_packets() {
                // rustls has queued an alert that says why; send it if we can.
                let _ = send_pending(&mut tls, wire);
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
        }
    }

    /// Reads what the socket has now, without waiting, and appends the
    /// plaintext it carries to `out` (a framed connection, read in the
    /// serving loop). Returns whether the input ended (`close_notify`, or
    /// the socket closed); `WouldBlock` when no plaintext came. Records
    /// that carry none yet (a record cut short, a key update) are kept for
    /// the next read.
    ///
    /// It returns with the first plaintext, at most one socket read's
    /// worth: what a client pipelines stays in the socket until the
    /// messages before it are handled, as on a plain connection, so a
    /// client that never reads its answers cannot make the server buffer
    /// without bound.
    pub(crate) fn read_now(&self, socket: &socket2::Socket, out: &mut Vec<u8>) -> io::Result<bool> {
        let mut tls = self.tls.borrow_mut();
        let start = out.len();
        loop {
            // All the plaintext rustls holds, straight onto the end of
            // `out`; it stays there whatever stops the read, and none is
            // left behind where polling the socket would not see it.
            match tls.reader().read_to_end(out) {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(e),
            }
            if out.len() > start {
                return Ok(false);
            }
            match tls.read_tls(&mut NonBlocking(socket)) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = send_pending(&mut tls, &mut NonBlocking(socket));
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
            // A key update's answer goes now if the socket has room; else
            // with the next reply.
            let _ = send_pending(&mut tls, &mut NonBlocking(socket));
        }
    }

    /// Encrypts all of `data` and sends it: as few records as its length
    /// allows (16 KiB of plaintext each).
    pub(crate) fn write_all(&self, mut data: &[u8], wire: &mut impl Write) -> io::Result<()> {
        let mut tls = self.tls.borrow_mut();
        while !data.is_empty() {
            let taken = tls.writer().write(data)?;
            if taken == 0 && !tls.wants_write() {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[taken..];
            send_pending(&mut tls, wire)?;
        }
        Ok(())
    }

    /// Encrypts and sends all of `data` on `socket` itself, blocking, each
    /// send under `write_timeout` and the connection's `deadline`: a
    /// framed connection's replies.
    pub(crate) fn send(
        &self,
        data: &[u8],
        socket: &socket2::Socket,
        write_timeout: Option<std::time::Duration>,
        deadline: Option<std::time::Instant>,
    ) -> io::Result<()> {
        self.write_all(data, &mut Blocking { socket, write_timeout, deadline })
    }

    /// Sends `close_notify` if the socket has room for it now: a framed
    /// connection the loop ends.
    pub(crate) fn close_now(&self, socket: &socket2::Socket) {
        self.close(&mut NonBlocking(socket));
    }

    /// Sends `close_notify`, so the client knows the answer is complete; a
    /// client already gone is no error worth reporting here.
    pub(crate) fn close(&self, wire: &mut (impl Read + Write)) {
        let mut tls = self.tls.borrow_mut();
        tls.send_close_notify();
        let _ = send_pending(&mut tls, wire);
    }
}

/// A socket read and written without waiting, and without SIGPIPE.
struct NonBlocking<'a>(&'a socket2::Socket);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::recv_now(self.0, buf, false)
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, crate::sys::NO_SIGNAL | libc::MSG_DONTWAIT)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking socket, each send under the write timeout and the
/// connection's deadline, without SIGPIPE.
struct Blocking<'a> {
    socket: &'a socket2::Socket,
    write_timeout: Option<std::time::Duration>,
    deadline: Option<std::time::Instant>,
}

impl Write for Blocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::deadline::arm(self.socket, self.write_timeout, self.deadline, socket2::Socket::set_write_timeout)?;
        self.socket.send_with_flags(buf, crate::sys::NO_SIGNAL).map_err(|e| crate::deadline::timed_out(e, "write"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes every TLS record rustls has ready.
fn send_pending(tls: &mut ServerConnection, wire: &mut impl Write) -> io::Result<()> {
    while tls.wants_write() {
        tls.write_tls(wire)?;
    }
    Ok(())
}

/// The example's certificates, for the test below.
#[cfg(test)]
#[path = "../../examples/prime/tls.rs"]
#[allow(dead_code, unreachable_pub, reason = "the example's module, in part")]
mod pki;

#[cfg(test)]
mod tests {
    use super::{Session, pki};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// A client pipelines 1 MiB, which the kernel holds for the server; one
    /// `read_now` takes at most one socket read's worth of it (the rest
    /// waits in the socket, as on a plain connection), and reads until
    /// `WouldBlock` take it all, in order.
    #[test]
    fn one_read_now_takes_one_reads_worth_and_the_rest_waits_in_the_socket() {
        let pki = pki::Pki::generate().unwrap();
        let server = crate::tls::ServerPem::bytes(pki.server_cert.clone(), pki.server_key.clone())
            .provider(pki::provider())
            .build()
            .unwrap();
        let client = pki::client_config(pki.ca.as_bytes(), None).unwrap();
        let listener = socket2::Socket::from(TcpListener::bind("127.0.0.1:0").unwrap());
        listener.set_recv_buffer_size(8 << 20).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let sent: Vec<u8> =
            (0..(1 << 20) / 8).flat_map(|i: u32| format!("{:07}\n", i % 10_000_000).into_bytes()).collect();
        let (done_tx, done) = std::sync::mpsc::channel();
        let (hold_tx, hold) = std::sync::mpsc::channel::<()>();
        let expected = sent.clone();
        let writer = std::thread::spawn(move || {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(client, name).unwrap();
            let mut stream = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
            stream.write_all(&sent).unwrap();
            stream.flush().unwrap();
            done_tx.send(()).unwrap();
            // Open until the server has read it all.
            let _ = hold.recv();
        });
        let (socket, _) = listener.accept().unwrap();
        let mut tls = rustls::ServerConnection::new(server).unwrap();
        let mut blocking = TcpStream::from(socket.try_clone().unwrap());
        while tls.is_handshaking() {
            tls.complete_io(&mut blocking).unwrap();
        }
        done.recv().unwrap();
        let session = Session::new(tls);
        let mut got = Vec::new();
        assert!(!session.read_now(&socket, &mut got).unwrap());
        assert!(!got.is_empty() && got.len() <= 64 * 1024, "one read took {} bytes", got.len());
        for _ in 0..10_000 {
            match session.read_now(&socket, &mut got) {
                Ok(_) if got.len() < expected.len() => {}
                Ok(_) => break,
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
        }
        assert!(
            got == expected,
            "{} of {} bytes, in order: {}",
            got.len(),
            expected.len(),
            got == expected[..got.len()]
        );
        hold_tx.send(()).unwrap();
        writer.join().unwrap();
    }
}
