//! The prime service's handler: one line in, one line out, on any transport.
//! No socket code here: the handler only sees `rfile` and `wfile`.

use std::io::{self, Write};

use socketserver::{Request, RequestHandler};

use crate::parse::parse_int;
use crate::primality::is_prime;

/// Default `--max-line`: room for Python's 4,300-digit limit plus sign,
/// separators and whitespace.
pub const DEFAULT_MAX_LINE: usize = 4400;

/// Answers each line with `T` (prime), `F` (an integer, not prime) or `E`
/// (not an integer as Python's `int()` reads it).
#[derive(Debug, Clone)]
pub struct PrimeService {
    /// Longest line served; a longer one is answered `E` and ends the request.
    pub max_line: usize,
}

impl Default for PrimeService {
    fn default() -> Self {
        PrimeService { max_line: DEFAULT_MAX_LINE }
    }
}

/// The answer line for one request line.
pub fn answer(line: &[u8]) -> &'static [u8] {
    match parse_int(line) {
        None => b"E\n",
        Some(n) if !n.negative && is_prime(&n.magnitude) => b"T\n",
        Some(_) => b"F\n",
    }
}

impl RequestHandler for PrimeService {
    fn handle(&self, req: &mut Request<'_>) -> io::Result<()> {
        let mut line = Vec::with_capacity(64);
        loop {
            line.clear();
            // The newline may come on top of max_line bytes.
            match req.rfile.read_until_limit(b'\n', &mut line, self.max_line + 1) {
                Ok(0) => return Ok(()),
                Ok(_) => req.wfile.write_all(answer(&line))?,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    // Not an integer Python would read either; answer, then
                    // end the connection rather than read the rest.
                    req.wfile.write_all(b"E\n")?;
                    return Err(e);
                }
                Err(e) => return Err(e),
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

    #[test]
    fn the_default_line_limit_fits_pythons_digit_limit() {
        let longest = format!("  -{}  \r\n", "7".repeat(crate::parse::MAX_DIGITS));
        assert!(longest.len() <= PrimeService::default().max_line);
        assert_eq!(DEFAULT_MAX_LINE, 4400);
    }

    /// Over a real connection: lines up to the limit are served, a longer
    /// one is answered `E` and the connection is closed without reading on.
    #[test]
    fn an_over_long_line_is_answered_e_and_ends_the_connection() {
        use socketserver::TcpServer;
        use std::io::{BufRead, BufReader};

        let mut server = TcpServer::bind("127.0.0.1:0", PrimeService { max_line: 16 }).unwrap();
        let addr = server.server_address().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || server.serve_forever());

        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        client.write_all(b"7\n").unwrap();
        client.write_all(&[b'1'; 64]).unwrap();
        let mut reader = BufReader::new(client);
        let mut answers = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            answers.push(line);
        }
        assert_eq!(answers, ["T\n", "E\n"]);
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
