//! The framing codec ([`ServerBuilder::framing`]): the rule that cuts
//! messages from a connection's bytes and frames replies, and the inbox the
//! bytes wait in. It knows no loop and no runner: the serving loop reads
//! into an [`Inbox`] and cuts messages from it; each whole message goes to
//! a handler as a datagram would (`rfile` is the message, `wfile` the
//! reply).
//!
//! [`ServerBuilder::framing`]: crate::ServerBuilder::framing

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;

/// How messages are cut from a connection's bytes, and how replies go back.
/// Cheap to clone: each message handed to a worker carries one.
///
/// ```
/// use socketserver::{Framing, Request, TcpServer, WorkerPool};
/// use std::io::Write;
///
/// // One line in, one line out; a pool of 8 serves any number of
/// // keep-alive clients, each holding a worker only while it is answered.
/// let server = TcpServer::builder(|req: &mut Request<'_>| req.wfile.write_all(b"ok\n"))
///     .dispatch(WorkerPool::new(8).into())
///     .framing(Framing::lines(4096))
///     .bind("127.0.0.1:0")?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Clone)]
pub struct Framing {
    rule: Rule,
    /// A message over the maximum comes in pieces rather than closing.
    in_pieces: bool,
}

type Splitter = Arc<dyn Fn(&[u8], bool) -> io::Result<Option<Split>> + Send + Sync>;

#[derive(Clone)]
enum Rule {
    Lines { max: usize },
    Prefixed { width: usize, max: usize },
    Custom { max: usize, split: Splitter },
}

/// Which part of a message a handler has ([`Request::piece`]): all of it,
/// or, for a message over the framing's maximum under
/// [`Framing::in_pieces`], one piece of it, in order.
///
/// [`Request::piece`]: crate::Request::piece
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Piece {
    /// The whole message: every request that is not a piece (streams and
    /// datagrams too).
    Whole,
    /// The first `max` bytes of a message over the maximum.
    First,
    /// The next `max` bytes; more follow.
    Middle,
    /// The rest (at most `max` bytes, a line's `\n` included): the message
    /// ends here. Empty when a line ended with the stream right after a
    /// piece.
    Last,
}

/// A message cut from a connection's bytes, or a piece of one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub bytes: Vec<u8>,
    pub piece: Piece,
}

/// What is left of a message over the maximum once a piece of it is taken.
#[derive(Debug, Clone, Copy)]
enum Left {
    /// A line: the rest ends at the next `\n` (or the end of the stream).
    Line,
    /// A length-prefixed message: this many bytes.
    Bytes(usize),
}

/// Where a custom framing found a whole message in a connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// How many bytes the message takes off the connection (delimiters,
    /// headers and all).
    pub consumed: usize,
    /// The message the handler reads: a range within `..consumed`.
    pub message: Range<usize>,
}

impl Framing {
    /// Lines, each ending in `\n`, at most `max` bytes with it. The handler
    /// reads the line with its `\n`; a last line without one, at the end of
    /// the stream, is handled as Python's `readline` returns it. Replies go
    /// back as written.
    pub fn lines(max: usize) -> Framing {
        Framing { rule: Rule::Lines { max }, in_pieces: false }
    }

    /// Messages of at most `max` bytes, each after its length as a
    /// big-endian u16. The handler reads the message alone; its reply goes
    /// back after its own length, the same way. A length above `max` closes
    /// the connection as soon as the prefix is in, before any of the
    /// message arrives (reported as `Error::MessageTooLong`, counted in
    /// `Stats::too_long`).
    pub fn u16_prefixed(max: usize) -> Framing {
        Framing { rule: Rule::Prefixed { width: 2, max: max.min(usize::from(u16::MAX)) }, in_pieces: false }
    }

    /// As [`u16_prefixed`](Self::u16_prefixed), with a big-endian u32 length:
    /// a prefix of 4 GiB over `max` closes the connection at once, nothing
    /// of it buffered.
    pub fn u32_prefixed(max: usize) -> Framing {
        Framing { rule: Rule::Prefixed { width: 4, max: max.min(u32::MAX as usize) }, in_pieces: false }
    }

    /// A framing of the caller's: `split` gets the bytes not yet taken and
    /// says where the first whole message is (`Ok(None)`: not whole yet;
    /// an error closes the connection, reported naming the peer). More than
    /// `max` bytes without a whole message close it too. Replies go back
    /// as written.
    ///
    /// `split` is not told that the stream ended: when the client closes
    /// its side, bytes `split` never called whole are dropped, and the
    /// connection closes with an error ("the connection closed inside a
    /// message") naming the peer. A protocol whose last message may lack
    /// its delimiter needs [`custom_to_end`](Self::custom_to_end).
    pub fn custom(max: usize, split: impl Fn(&[u8]) -> io::Result<Option<Split>> + Send + Sync + 'static) -> Framing {
        Framing::custom_to_end(max, move |bytes, _| split(bytes))
    }

    /// As [`custom`](Self::custom), and `split` is told when the stream
    /// ended (`ended`: the client closed its side, and `bytes` are all
    /// there will be), so a last message without its delimiter can still
    /// be cut whole and answered, as [`lines`](Self::lines) answers a last
    /// line without its `\n`. `Ok(None)` then drops what is left, with the
    /// error `custom` reports.
    ///
    /// ```
    /// use socketserver::{Framing, Split};
    ///
    /// // Messages end in a NUL, which the handler does not see; the last may lack it.
    /// let nul = Framing::custom_to_end(4096, |bytes: &[u8], ended| {
    ///     Ok(match bytes.iter().position(|&b| b == 0) {
    ///         Some(end) => Some(Split { consumed: end + 1, message: 0..end }),
    ///         None if ended => Some(Split { consumed: bytes.len(), message: 0..bytes.len() }),
    ///         None => None,
    ///     })
    /// });
    /// ```
    pub fn custom_to_end(
        max: usize,
        split: impl Fn(&[u8], bool) -> io::Result<Option<Split>> + Send + Sync + 'static,
    ) -> Framing {
        Framing { rule: Rule::Custom { max, split: Arc::new(split) }, in_pieces: false }
    }

    /// A message over the maximum reaches the handler in pieces of `max`
    /// bytes, in order, each marked by [`Request::piece`] ([`Piece::First`],
    /// [`Piece::Middle`]s, [`Piece::Last`]), instead of closing the
    /// connection: the handler can answer it (an error on the first piece,
    /// the rest ignored) or read it whole, keeping what it needs of each
    /// piece in [`Request::connection_state`]. A connection still buffers
    /// at most `max` bytes. Lines and length prefixes only: a custom
    /// framing cannot say where an over-long message ends, so there it
    /// still closes the connection.
    ///
    /// ```
    /// use socketserver::{Framing, Piece, Request, TcpServer};
    /// use std::io::Write;
    ///
    /// // Commands of at most 64 bytes; a longer one is answered, and skipped.
    /// let handler = |req: &mut Request<'_>| match req.piece() {
    ///     Piece::Whole => req.wfile.write_all(b"+OK\n"),
    ///     Piece::First => req.wfile.write_all(b"-ERR line too long\n"),
    ///     _ => Ok(()),
    /// };
    /// let server = TcpServer::builder(handler).framing(Framing::lines(64).in_pieces()).bind("127.0.0.1:0")?;
    /// # Ok::<(), socketserver::Error>(())
    /// ```
    ///
    /// [`Request::piece`]: crate::Request::piece
    /// [`Request::connection_state`]: crate::Request::connection_state
    pub fn in_pieces(mut self) -> Framing {
        self.in_pieces = true;
        self
    }

    /// The largest message the framing takes (its length prefix aside).
    pub(crate) fn max(&self) -> usize {
        match &self.rule {
            Rule::Lines { max } | Rule::Custom { max, .. } | Rule::Prefixed { max, .. } => *max,
        }
    }

    /// The first message in `bytes`; `eof`: no more bytes will come.
    fn cut(&self, bytes: &[u8], eof: bool) -> Cut {
        let ended_inside = || Cut::Invalid("the connection closed inside a message".into());
        match &self.rule {
            Rule::Lines { max } => match bytes.iter().take(*max).position(|&b| b == b'\n') {
                Some(end) => Cut::Whole(Split { consumed: end + 1, message: 0..end + 1 }),
                None if bytes.len() >= *max => Cut::TooLong,
                None if eof && !bytes.is_empty() => {
                    Cut::Whole(Split { consumed: bytes.len(), message: 0..bytes.len() })
                }
                None => Cut::More,
            },
            Rule::Prefixed { width, max } => {
                let Some(prefix) = bytes.get(..*width) else {
                    return if eof && !bytes.is_empty() { ended_inside() } else { Cut::More };
                };
                let len = length(prefix);
                match bytes.len() - width {
                    _ if len > *max => Cut::TooLong,
                    have if have >= len => Cut::Whole(Split { consumed: width + len, message: *width..width + len }),
                    _ if eof => ended_inside(),
                    _ => Cut::More,
                }
            }
            // An empty rest at the end is no message, whatever `split` says.
            Rule::Custom { .. } if eof && bytes.is_empty() => Cut::More,
            Rule::Custom { max, split } => match split(bytes, eof) {
                Ok(Some(split))
                    if split.consumed > 0
                        && split.consumed <= bytes.len()
                        && split.message.start <= split.message.end
                        && split.message.end <= split.consumed =>
                {
                    Cut::Whole(split)
                }
                Ok(Some(split)) => Cut::Invalid(format!("the framing returned {split:?} for {} bytes", bytes.len())),
                Ok(None) if bytes.len() >= *max => Cut::TooLong,
                Ok(None) if eof && !bytes.is_empty() => ended_inside(),
                Ok(None) => Cut::More,
                Err(e) => Cut::Invalid(e.to_string()),
            },
        }
    }

    /// The first piece of a message over the maximum, and what is left of
    /// it; `None`: not all of the piece is in yet.
    fn first_piece(&self, bytes: &[u8], eof: bool) -> Result<Option<(Split, Left)>, Refused> {
        match self.rule {
            // `cut` found no newline in the first `max` bytes.
            Rule::Lines { max } => Ok(Some((Split { consumed: max, message: 0..max }, Left::Line))),
            Rule::Prefixed { width, max } => {
                let len = length(&bytes[..width]);
                match bytes.len() - width {
                    have if have >= max => {
                        Ok(Some((Split { consumed: width + max, message: width..width + max }, Left::Bytes(len - max))))
                    }
                    _ if eof => Err(Refused::Invalid("the connection closed inside a message".into())),
                    _ => Ok(None),
                }
            }
            Rule::Custom { .. } => Err(Refused::TooLong),
        }
    }

    /// The next piece of a message over the maximum, whether it is its
    /// last, and what is left after it; `None`: not all of it is in yet.
    fn next_piece(&self, bytes: &[u8], left: Left, eof: bool) -> Result<Option<(Split, Option<Left>)>, Refused> {
        let max = self.max();
        let piece = |len: usize| Split { consumed: len, message: 0..len };
        match left {
            Left::Line => match bytes.iter().take(max).position(|&b| b == b'\n') {
                Some(end) => Ok(Some((piece(end + 1), None))),
                None if bytes.len() >= max => Ok(Some((piece(max), Some(Left::Line)))),
                // A last line without its newline, as `lines` answers one.
                None if eof => Ok(Some((piece(bytes.len()), None))),
                None => Ok(None),
            },
            Left::Bytes(n) => {
                let len = n.min(max);
                match bytes.len() {
                    have if have >= len => Ok(Some((piece(len), (n > len).then(|| Left::Bytes(n - len))))),
                    _ if eof => Err(Refused::Invalid("the connection closed inside a message".into())),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Appends `reply` as it goes on the wire to `out`.
    pub(crate) fn frame(&self, reply: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if let Rule::Prefixed { width, .. } = self.rule {
            let len = reply.len() as u64;
            if len >> (8 * width) != 0 {
                return Err(io::Error::other(format!("a reply of {len} bytes does not fit a {width}-byte length")));
            }
            out.extend_from_slice(&len.to_be_bytes()[8 - width..]);
        }
        out.extend_from_slice(reply);
        Ok(())
    }
}

impl fmt::Debug for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Rule::Lines { max } => write!(f, "Framing::lines({max})"),
            Rule::Prefixed { width, max } => write!(f, "Framing::u{}_prefixed({max})", width * 8),
            Rule::Custom { max, .. } => write!(f, "Framing::custom({max}, ..)"),
        }?;
        if self.in_pieces { f.write_str(".in_pieces()") } else { Ok(()) }
    }
}

/// The big-endian length a prefix says.
fn length(prefix: &[u8]) -> usize {
    prefix.iter().fold(0usize, |n, &b| n << 8 | usize::from(b))
}

/// What the bytes so far hold.
enum Cut {
    More,
    Whole(Split),
    TooLong,
    Invalid(String),
}

/// Why a connection's bytes were refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// More than the framing's maximum without a whole message.
    TooLong,
    /// Not a message of this framing; the reason says why.
    Invalid(String),
}

/// A connection's bytes read but not yet handled. Empty, it holds no
/// memory: an idle connection costs no buffer.
///
/// Messages are cut from the front by moving a cursor, not the bytes: a
/// read that brought ten thousand short lines costs one copy of what is
/// left, when the next read comes, not one per line.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    bytes: Vec<u8>,
    /// Where the bytes not yet taken begin.
    start: usize,
    /// Inside a message over the maximum, taken in pieces: what is left of it.
    left: Option<Left>,
}

impl Inbox {
    /// Nothing of a message is in: between messages (not inside one taken
    /// in pieces).
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.bytes.len() && self.left.is_none()
    }

    /// Appends what a read got.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.room().extend_from_slice(bytes);
    }

    /// The buffer with the bytes already taken gone, to read onto its end.
    pub(crate) fn room(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        &mut self.bytes
    }

    /// Takes the first whole message (or the next piece of one over the
    /// maximum), if there is one; `eof`: no more bytes will come.
    pub(crate) fn next(&mut self, framing: &Framing, eof: bool) -> Result<Option<Message>, Refused> {
        let rest = &self.bytes[self.start..];
        let (split, piece, left) = match self.left {
            Some(left) => match framing.next_piece(rest, left, eof)? {
                None => return Ok(None),
                Some((split, None)) => (split, Piece::Last, None),
                Some((split, left)) => (split, Piece::Middle, left),
            },
            None => match framing.cut(rest, eof) {
                Cut::More => return Ok(None),
                Cut::TooLong if framing.in_pieces => match framing.first_piece(rest, eof)? {
                    None => return Ok(None),
                    Some((split, left)) => (split, Piece::First, Some(left)),
                },
                Cut::TooLong => return Err(Refused::TooLong),
                Cut::Invalid(reason) => return Err(Refused::Invalid(reason)),
                Cut::Whole(split) => (split, Piece::Whole, None),
            },
        };
        let bytes = rest[split.message].to_vec();
        self.start += split.consumed;
        self.left = left;
        if self.is_empty() {
            // Idle again: give the memory back.
            *self = Inbox::default();
        }
        Ok(Some(Message { bytes, piece }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every message `framing` cuts from `stream` when it arrives in the
    /// pieces `splits` make, then the end of the stream.
    fn messages(framing: &Framing, stream: &[u8], splits: &[usize]) -> Result<Vec<Vec<u8>>, Refused> {
        Ok(pieces(framing, stream, splits)?.into_iter().map(|(_, bytes)| bytes).collect())
    }

    fn prefixed(messages: &[Vec<u8>]) -> Vec<u8> {
        messages.iter().flat_map(|m| [&(m.len() as u16).to_be_bytes()[..], m].concat()).collect()
    }

    proptest! {
        #[test]
        fn lines_split_anywhere_are_the_same_lines(
            lines in proptest::collection::vec("[a-z0-9 ]{0,20}\n", 0..8),
            last in "[a-z]{0,5}",
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let stream = format!("{}{last}", lines.concat());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut expected: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
            if !last.is_empty() {
                // Python's readline: the last line without its newline.
                expected.push(last.into_bytes());
            }
            prop_assert_eq!(messages(&Framing::lines(64), stream.as_bytes(), &cuts).unwrap(), expected);
        }

        #[test]
        fn prefixed_frames_split_anywhere_are_the_same_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            let stream = prefixed(&frames);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(messages(&Framing::u16_prefixed(64), &stream, &cuts).unwrap(), frames);
        }
    }

    #[test]
    fn every_single_split_point_gives_the_same_messages() {
        let stream = b"17\n4\n\n1125899906842623\n5";
        let whole = messages(&Framing::lines(64), stream, &[]).unwrap();
        for at in 0..=stream.len() {
            assert_eq!(messages(&Framing::lines(64), stream, &[at]).unwrap(), whole, "split at {at}");
        }
    }

    #[test]
    fn too_long_and_cut_short_messages_are_refused() {
        assert_eq!(messages(&Framing::lines(4), b"12345\n", &[]), Err(Refused::TooLong));
        assert_eq!(messages(&Framing::u16_prefixed(4), &[0, 5, 1, 2, 3, 4, 5], &[]), Err(Refused::TooLong));
        let cut = messages(&Framing::u32_prefixed(64), &[0, 0, 0, 9, 1], &[]);
        assert!(matches!(cut, Err(Refused::Invalid(_))), "{cut:?}");
        // A line of exactly the maximum, newline included, is whole.
        assert_eq!(messages(&Framing::lines(4), b"123\n", &[]).unwrap(), [b"123\n".to_vec()]);
    }

    #[test]
    fn a_custom_framing_cuts_where_it_says_and_its_mistakes_are_refused() {
        // Messages end in a NUL, which the handler does not see.
        let nul = Framing::custom(16, |bytes| {
            Ok(bytes.iter().position(|&b| b == 0).map(|end| Split { consumed: end + 1, message: 0..end }))
        });
        assert_eq!(messages(&nul, b"ab\0c\0", &[1, 3]).unwrap(), [b"ab".to_vec(), b"c".to_vec()]);
        let liar = Framing::custom(16, |_| Ok(Some(Split { consumed: 99, message: 0..1 })));
        assert!(matches!(messages(&liar, b"x", &[]), Err(Refused::Invalid(_))));
    }

    /// Every message or piece `framing` cuts from `stream`, with which
    /// piece it is, read in the pieces `splits` make, then the end.
    fn pieces(framing: &Framing, stream: &[u8], splits: &[usize]) -> Result<Vec<(Piece, Vec<u8>)>, Refused> {
        let mut inbox = Inbox::default();
        let mut got = Vec::new();
        let mut from = 0;
        for &at in splits.iter().chain([&stream.len()]) {
            inbox.push(&stream[from..at.max(from)]);
            from = at.max(from);
            while let Some(m) = inbox.next(framing, false)? {
                got.push((m.piece, m.bytes));
            }
        }
        while let Some(m) = inbox.next(framing, true)? {
            got.push((m.piece, m.bytes));
        }
        assert!(inbox.is_empty());
        Ok(got)
    }

    #[test]
    fn an_over_long_line_comes_in_pieces_and_the_next_line_is_whole() {
        use Piece::*;
        let lines = Framing::lines(4).in_pieces();
        let expected = vec![
            (First, b"abcd".to_vec()),
            (Middle, b"efgh".to_vec()),
            (Last, b"ij\n".to_vec()),
            (Whole, b"7\n".to_vec()),
            (Whole, b"8".to_vec()),
        ];
        let stream = b"abcdefghij\n7\n8";
        for at in 0..=stream.len() {
            assert_eq!(pieces(&lines, stream, &[at]).unwrap(), expected, "split at {at}");
        }
        // A line that ends with the stream right after a piece still has its last piece.
        assert_eq!(pieces(&lines, b"abcd", &[]).unwrap(), [(First, b"abcd".to_vec()), (Last, Vec::new())]);
        // A line of exactly the maximum, newline included, is whole, as without pieces.
        assert_eq!(pieces(&lines, b"abc\n", &[]).unwrap(), [(Whole, b"abc\n".to_vec())]);
    }

    #[test]
    fn an_over_long_prefixed_message_comes_in_pieces_of_the_maximum() {
        use Piece::*;
        let framing = Framing::u16_prefixed(4).in_pieces();
        let stream = [&[0, 9][..], b"123456789", &[0, 1], b"x"].concat();
        let expected =
            vec![(First, b"1234".to_vec()), (Middle, b"5678".to_vec()), (Last, b"9".to_vec()), (Whole, b"x".to_vec())];
        for at in 0..=stream.len() {
            assert_eq!(pieces(&framing, &stream, &[at]).unwrap(), expected, "split at {at}");
        }
        // Cut short inside a piece: refused as a whole message cut short is.
        assert!(matches!(pieces(&framing, &[0, 9, 1, 2, 3, 4, 5], &[]), Err(Refused::Invalid(_))));
        // A custom framing cannot say where the rest ends: still refused.
        let custom = Framing::custom(4, |_| Ok(None)).in_pieces();
        assert_eq!(pieces(&custom, b"abcdef", &[]), Err(Refused::TooLong));
    }

    proptest! {
        /// In pieces, the pieces of each message put together are the
        /// message, and no piece is over the maximum.
        #[test]
        fn pieces_put_together_are_the_lines(
            lines in proptest::collection::vec("[a-z]{0,20}\n", 0..6),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let stream = lines.concat();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let got = pieces(&Framing::lines(5).in_pieces(), stream.as_bytes(), &cuts).unwrap();
            let mut joined = Vec::new();
            let mut current = Vec::new();
            for (piece, bytes) in got {
                prop_assert!(bytes.len() <= 5);
                current.extend_from_slice(&bytes);
                if matches!(piece, Piece::Whole | Piece::Last) {
                    joined.push(String::from_utf8(std::mem::take(&mut current)).unwrap());
                }
            }
            prop_assert_eq!(joined, lines);
        }
    }

    #[test]
    fn a_custom_framing_told_of_the_end_cuts_a_last_message_without_its_delimiter() {
        let nul = |told: bool| {
            Framing::custom_to_end(16, move |bytes: &[u8], ended| {
                Ok(match bytes.iter().position(|&b| b == 0) {
                    Some(end) => Some(Split { consumed: end + 1, message: 0..end }),
                    None if ended && told => Some(Split { consumed: bytes.len(), message: 0..bytes.len() }),
                    None => None,
                })
            })
        };
        assert_eq!(messages(&nul(true), b"ab\0c", &[]).unwrap(), [b"ab".to_vec(), b"c".to_vec()]);
        assert!(matches!(messages(&nul(false), b"ab\0c", &[]), Err(Refused::Invalid(_))));
    }

    #[test]
    fn replies_are_framed_as_the_requests_were() {
        let mut out = Vec::new();
        Framing::u16_prefixed(10).frame(b"T\n", &mut out).unwrap();
        assert_eq!(out, [0, 2, b'T', b'\n']);
        out.clear();
        Framing::lines(10).frame(b"T\n", &mut out).unwrap();
        assert_eq!(out, b"T\n");
        assert!(Framing::u16_prefixed(10).frame(&vec![0; 70_000], &mut out).is_err());
    }

    #[test]
    fn an_idle_inbox_holds_no_memory() {
        let mut inbox = Inbox::default();
        inbox.push(b"17\n");
        let message = inbox.next(&Framing::lines(64), false).unwrap();
        assert_eq!(message, Some(Message { bytes: b"17\n".to_vec(), piece: Piece::Whole }));
        assert_eq!(inbox.bytes.capacity(), 0);
    }
}
