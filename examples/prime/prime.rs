//! The prime service's handler: one line in, one line out, on any transport.
//! No socket code here: the handler only sees `rfile` and `wfile`.

use std::io::{self, BufRead, Write};

use socketserver::{Kind, Piece, Request, RequestHandler};

use crate::parse::{Int, LineParser, MAX_DIGITS};
use crate::primality::is_prime;

/// Answers each line with `T` (prime), `F` (an integer, not prime) or `E`
/// (not an integer as Python's `int()` reads it), the way Python would
/// however long the line: only its digits are kept, at most `max_digits`.
#[derive(Debug, Clone)]
pub struct PrimeService {
    /// Python's `sys.get_int_max_str_digits()`: numbers with more digits
    /// are answered `E`. The cost of a test grows with the cube of it.
    pub max_digits: usize,
    /// Writes a line per answer on stderr: the client's address as the
    /// handler sees it, the transport, the answer.
    pub access_log: bool,
}

impl Default for PrimeService {
    fn default() -> Self {
        PrimeService { max_digits: MAX_DIGITS, access_log: false }
    }
}

impl PrimeService {
    /// The longest line that is read to its end once it cannot be a number:
    /// as long as the longest number (a sign, then digits with an
    /// underscore between each two). Past it the line is answered `E` and
    /// the connection ends, rather than read on.
    pub fn invalid_line_limit(&self) -> usize {
        2 * self.max_digits
    }

    /// Writes one answer, and its access-log line if asked to.
    fn reply(&self, req: &mut Request<'_>, answer: &[u8]) -> io::Result<()> {
        if self.access_log {
            let transport = match (req.server_address().is_unix(), req.kind()) {
                (false, Kind::Stream | Kind::Message) => "tcp",
                (false, _) => "udp",
                (true, Kind::Stream | Kind::Message) => "unix-stream",
                (true, _) => "unix-datagram",
            };
            let verdict = String::from_utf8_lossy(answer.trim_ascii_end());
            // One write per line, so lines from concurrent requests never mix.
            let line = format!("{} {transport} {verdict}\n", req.client_address());
            let _ = io::stderr().write_all(line.as_bytes());
        }
        req.wfile.write_all(answer)
    }
}

/// The answer line for one request line.
#[allow(dead_code, reason = "the benches' std-loop baseline and the tests share this file")]
pub fn answer(line: &[u8]) -> &'static [u8] {
    verdict(crate::parse::parse_int(line))
}

fn verdict(n: Option<Int>) -> &'static [u8] {
    match n {
        None => b"E\n",
        Some(n) if !n.negative && is_prime(&n.magnitude) => b"T\n",
        Some(_) => b"F\n",
    }
}

/// Where a framed line over the framing's maximum stands between its
/// pieces: kept with the connection, as the unframed handler keeps its
/// parser on its stack.
#[derive(Default)]
enum LongLine {
    #[default]
    None,
    Reading(LineParser),
    /// Answered `E` already: the rest of the line changes nothing.
    Answered,
}

impl PrimeService {
    /// A piece of a framed line over the framing's maximum (`--framing
    /// lines`): read as the unframed handler reads a long line, answered
    /// once, at the line's end or as soon as it cannot be a number; the
    /// connection then goes on with the next line.
    fn piece(&self, req: &mut Request<'_>) -> io::Result<()> {
        let piece = req.piece();
        let bytes = req.packet().unwrap_or_default();
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let Some(state) = req.connection_state::<LongLine>() else { return Ok(()) };
        if piece == Piece::First {
            *state = LongLine::Reading(LineParser::new(self.max_digits));
        }
        let answer = match state {
            LongLine::Reading(line) => {
                line.feed(bytes);
                if piece == Piece::Last {
                    let answer = verdict(line.finish());
                    *state = LongLine::None;
                    answer
                } else if line.is_invalid() {
                    *state = LongLine::Answered;
                    b"E\n"
                } else {
                    return Ok(());
                }
            }
            LongLine::Answered if piece == Piece::Last => {
                *state = LongLine::None;
                return Ok(());
            }
            LongLine::Answered | LongLine::None => return Ok(()),
        };
        self.reply(req, answer)
    }
}

impl RequestHandler for PrimeService {
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        if req.piece() != Piece::Whole {
            return self.piece(req);
        }
        let mut line = LineParser::new(self.max_digits);
        loop {
            let input = req.rfile.fill_buf()?;
            if input.is_empty() {
                // A last line without a newline is still a line.
                if !line.is_empty() {
                    self.reply(req, verdict(line.finish()))?;
                }
                return Ok(());
            }
            let (piece, newline) = match input.iter().position(|&b| b == b'\n') {
                Some(end) => (&input[..end], true),
                None => (input, false),
            };
            let used = piece.len() + usize::from(newline);
            line.feed(piece);
            req.rfile.consume(used);
            if newline {
                self.reply(req, verdict(line.finish()))?;
            } else if line.is_invalid() && line.len() > self.invalid_line_limit() {
                // Not a number Python would read either; answer, then end
                // the connection rather than read the rest.
                self.reply(req, b"E\n")?;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a line of over {} bytes that is not an integer", self.invalid_line_limit()),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_answers() {
        for (input, expected) in [
            ("4j", "E"),
            ("4", "F"),
            ("5", "T"),
            ("-5", "F"),
            ("17", "T"),
            ("29", "T"),
            ("1125899906842624", "F"),
            ("1125899906842623", "F"),
            ("0", "F"),
            ("1", "F"),
            ("2", "T"),
            ("", "E"),
        ] {
            assert_eq!(answer(format!("{input}\n").as_bytes()), format!("{expected}\n").as_bytes(), "{input:?}");
        }
    }

    /// Over a real connection, as Python's `int()` on each line: numbers of
    /// any padding and up to the digit limit are read, past it they are
    /// `E`; a line that cannot be a number and outgrows the longest number
    /// is answered `E` and the connection is closed without reading on.
    #[test]
    fn long_lines_are_answered_as_python_would_and_garbage_ends_the_connection() {
        use socketserver::TcpServer;
        use std::io::BufReader;

        let mut server =
            TcpServer::bind("127.0.0.1:0", PrimeService { max_digits: 8, ..PrimeService::default() }).unwrap();
        let addr = server.server_address().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || server.serve_forever());

        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        client.write_all(b"7\n").unwrap();
        // A prime of 8 digits (the limit) padded far past 2 x 8 bytes.
        client.write_all(format!("{0}1_000_001_9{0}\n", " ".repeat(10_000)).as_bytes()).unwrap();
        client.write_all(b"123456789\n").unwrap();
        client.write_all(&[b'1'; 64]).unwrap();
        let mut reader = BufReader::new(client);
        let mut answers = Vec::new();
        for _ in 0..4 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            answers.push(line);
        }
        assert_eq!(answers, ["T\n", "T\n", "E\n", "E\n"]);
        let mut rest = String::new();
        // End of stream, or a reset because the rest of the line was never read.
        assert!(reader.read_line(&mut rest).map_or(true, |n| n == 0), "{rest:?}");
        stop.shutdown();
        serving.join().unwrap().unwrap();
    }

    /// One TCP and one UDP server for the property tests below, started once.
    fn servers() -> (std::net::SocketAddr, std::net::SocketAddr) {
        use socketserver::{TcpServer, UdpServer};
        static SERVERS: std::sync::OnceLock<(std::net::SocketAddr, std::net::SocketAddr)> = std::sync::OnceLock::new();
        *SERVERS.get_or_init(|| {
            let mut tcp = TcpServer::threading("127.0.0.1:0", PrimeService::default()).unwrap();
            let mut udp = UdpServer::bind("127.0.0.1:0", PrimeService::default()).unwrap();
            let addrs = (tcp.server_address().as_inet().unwrap(), udp.server_address().as_inet().unwrap());
            std::thread::spawn(move || tcp.serve_forever());
            std::thread::spawn(move || udp.serve_forever());
            addrs
        })
    }

    /// What the service must answer to `payload`: one answer per line, in order.
    fn expected(payload: &[u8]) -> Vec<u8> {
        payload.split_inclusive(|&b| b == b'\n').flat_map(answer).copied().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random bytes through the real adapters, over a real connection
        /// and a real datagram: one answer per line, never a crash.
        #[test]
        fn random_bytes_over_real_sockets_get_one_answer_per_line(
            payload in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'7'), Just(b' '), any::<u8>()], 0..3000)
        ) {
            use std::io::Read;
            let (tcp, udp) = servers();
            let mut conn = std::net::TcpStream::connect(tcp).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
            conn.write_all(&payload).unwrap();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            let mut answers = Vec::new();
            conn.read_to_end(&mut answers).unwrap();
            prop_assert_eq!(&answers, &expected(&payload));

            if !payload.is_empty() {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
                socket.send_to(&payload, udp).unwrap();
                let mut reply = vec![0u8; 65536];
                let n = socket.recv(&mut reply).unwrap();
                prop_assert_eq!(&reply[..n], &expected(&payload)[..]);
            }
        }
    }

    proptest! {
        #[test]
        fn every_line_gets_one_of_t_f_e(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert!([&b"T\n"[..], b"F\n", b"E\n"].contains(&answer(&bytes)));
        }
    }
}
