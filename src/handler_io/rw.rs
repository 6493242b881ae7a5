//! `Reader` and `Writer`: the `rfile` and `wfile` of every request.

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};

use super::conn::{Conn, ConnRead, STREAM_BUFFER};

/// The reading half of a request: the connection, or the one datagram.
///
/// On a stream, reading when no input is buffered first flushes what the
/// handler wrote to `wfile`. A request/response handler therefore never
/// deadlocks waiting for a client that waits for its answer, while answers to
/// pipelined requests still leave in as few sends as possible.
///
/// On a datagram (or a framed message), [`fill_buf`](BufRead::fill_buf)
/// returns all of what is left of it at once, never a part, and the whole
/// of it before anything is read: the bytes without a copy.
/// [`Request::packet`](crate::Request::packet) gives the whole of it
/// however much was read.
pub struct Reader<'a> {
    source: Source<'a>,
}

enum Source<'a> {
    Stream {
        input: BufReader<ConnRead<'a>>,
        conn: &'a Conn,
    },
    /// The whole datagram (or framed message), and what is left to read.
    Datagram {
        whole: &'a [u8],
        left: &'a [u8],
    },
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Stream { input, conn } => {
                f.debug_struct("Reader").field("stream", &conn.socket).field("buffered", &input.buffer().len()).finish()
            }
            Source::Datagram { left, .. } => f.debug_struct("Reader").field("datagram_left", &left.len()).finish(),
        }
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn stream(conn: &'a Conn) -> Self {
        let input = BufReader::with_capacity(STREAM_BUFFER, ConnRead(conn));
        Reader { source: Source::Stream { input, conn } }
    }

    pub(crate) fn datagram(packet: &'a [u8]) -> Self {
        Reader { source: Source::Datagram { whole: packet, left: packet } }
    }

    /// The whole datagram or framed message, however much was read.
    pub(crate) fn packet(&self) -> Option<&'a [u8]> {
        match self.source {
            Source::Datagram { whole, .. } => Some(whole),
            Source::Stream { .. } => None,
        }
    }

    /// What a stream reader read off its connection and the handler did
    /// not take, taken out of it.
    pub(crate) fn take_unread(&mut self) -> Vec<u8> {
        let Source::Stream { input, .. } = &mut self.source else { return Vec::new() };
        let unread = input.buffer().to_vec();
        input.consume(unread.len());
        unread
    }
}

impl Reader<'_> {
    /// Reads up to and including `delimiter` into `buf`, but never more than
    /// `max` bytes: a bounded `read_until` for handlers facing clients that
    /// may send an endless line.
    ///
    /// Returns the number of bytes read (0 at end of input). If `max` bytes
    /// arrive without the delimiter, returns an `InvalidData` error; `buf`
    /// then holds those `max` bytes, and the rest of the line is unread.
    ///
    /// ```
    /// # use std::io::Write;
    /// # use socketserver::Request;
    /// let handler = |req: &mut Request<'_>| {
    ///     let mut line = Vec::new();
    ///     while req.rfile.read_until_limit(b'\n', &mut line, 1024)? > 0 {
    ///         req.wfile.write_all(&line)?;
    ///         line.clear();
    ///     }
    ///     Ok(())
    /// };
    /// # let _ = socketserver::TcpServer::bind("127.0.0.1:0", handler);
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidData` when `max` bytes came without the delimiter; otherwise the connection's read error (a timeout, a reset).
    pub fn read_until_limit(&mut self, delimiter: u8, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let read = self.take(max as u64).read_until(delimiter, buf)?;
        if read == max && buf.last() != Some(&delimiter) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {max} bytes without a {:?} delimiter", delimiter as char),
            ));
        }
        Ok(read)
    }

    fn flush_before_blocking(&mut self) -> io::Result<()> {
        match &mut self.source {
            Source::Stream { input, conn } if input.buffer().is_empty() && !conn.has_input_buffered() => conn.flush(),
            _ => Ok(()),
        }
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.flush_before_blocking()?;
        match &mut self.source {
            Source::Stream { input, .. } => input.read(buf),
            Source::Datagram { left, .. } => left.read(buf),
        }
    }
}

impl BufRead for Reader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.flush_before_blocking()?;
        match &mut self.source {
            Source::Stream { input, .. } => input.fill_buf(),
            Source::Datagram { left, .. } => Ok(left),
        }
    }

    fn consume(&mut self, amount: usize) {
        match &mut self.source {
            Source::Stream { input, .. } => input.consume(amount),
            Source::Datagram { left, .. } => left.consume(amount),
        }
    }
}

/// The writing half of a request: buffered onto the connection (stream), or
/// collected into the one reply datagram (datagram).
///
/// A stream writer is flushed when the handler reads and no input is
/// buffered, when the buffer fills, and after `finish`. A datagram reply is
/// sent once, after `finish`, and only if something was written.
///
/// As with every [`Write`], `write` may take only part of a large buffer
/// (a stream write past the buffer goes straight to the kernel, which may
/// take less): use `write_all` (or `write!`), where Python code writes
/// `wfile.write(data)`.
pub struct Writer<'a> {
    sink: Sink<'a>,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sink {
            Sink::Stream(conn) => f.debug_struct("Writer").field("stream", &conn.socket).finish(),
            Sink::Datagram(reply) => f.debug_struct("Writer").field("reply_len", &reply.len()).finish(),
        }
    }
}

impl Writer<'_> {
    /// Sends `len` bytes of `file` starting at `offset` (to its end if
    /// `None`), after anything written before (Python's `socket.sendfile`).
    ///
    /// On a Linux stream connection the kernel copies file pages straight to
    /// the socket (sendfile(2)): no copy through user space; over TLS
    /// (feature `tls`) the bytes are read and encrypted here. A datagram
    /// request's reply gets the bytes appended (it is still one datagram).
    /// Returns how many bytes were sent, fewer than `len` only at end of file.
    ///
    /// ```no_run
    /// # use socketserver::Request;
    /// let serve_file = |req: &mut Request<'_>| {
    ///     let file = std::fs::File::open("/srv/big.iso")?;
    ///     req.wfile.sendfile(&file, 0, None).map(drop)
    /// };
    /// # let _ = socketserver::TcpServer::bind("127.0.0.1:0", serve_file);
    /// ```
    ///
    /// # Errors
    ///
    /// The file's or the connection's I/O error; a peer that left gives a broken-pipe or reset error, never a SIGPIPE.
    pub fn sendfile(&mut self, file: &std::fs::File, offset: u64, len: Option<u64>) -> io::Result<u64> {
        match &mut self.sink {
            Sink::Stream(conn) => conn.send_file(file, offset, len),
            Sink::Datagram(reply) => {
                use std::os::unix::fs::FileExt;
                let available = file.metadata()?.len().saturating_sub(offset);
                let wanted = len.map_or(available, |len| len.min(available));
                let start = reply.len();
                reply.resize(start + wanted as usize, 0);
                file.read_exact_at(&mut reply[start..], offset)?;
                Ok(wanted)
            }
        }
    }

    /// Unix stream connections: sends `data` (at least one byte) with `fds`
    /// attached (SCM_RIGHTS), after anything written before. The client
    /// receives its own duplicates of the fds; ours stay open. Datagram
    /// requests, inet connections and TLS connections get an `Unsupported`
    /// error.
    ///
    /// # Errors
    ///
    /// `Unsupported` on a datagram request or an inet connection; otherwise the send's I/O error.
    pub fn send_fds(&mut self, data: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
        if data.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "fds must travel with at least one byte"));
        }
        match &mut self.sink {
            Sink::Stream(conn) => conn.send_fds(data, fds),
            Sink::Datagram(_) => {
                Err(io::Error::new(io::ErrorKind::Unsupported, "a datagram reply cannot carry file descriptors"))
            }
        }
    }
}

impl<'a> Writer<'a> {
    pub(crate) fn stream(conn: &'a Conn) -> Self {
        Writer { sink: Sink::Stream(conn) }
    }

    pub(crate) fn datagram(reply: &'a mut Vec<u8>) -> Self {
        Writer { sink: Sink::Datagram(reply) }
    }
}

enum Sink<'a> {
    Stream(&'a Conn),
    Datagram(&'a mut Vec<u8>),
}

impl Write for Writer<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(data)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Stream(conn) => conn.write_vectored(bufs),
            Sink::Datagram(reply) => reply.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stream(conn) => conn.flush(),
            Sink::Datagram(_) => Ok(()),
        }
    }
}
