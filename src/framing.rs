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
pub struct Framing(Rule);

type Splitter = Arc<dyn Fn(&[u8]) -> io::Result<Option<Split>> + Send + Sync>;

#[derive(Clone)]
enum Rule {
    Lines { max: usize },
    Prefixed { width: usize, max: usize },
    Custom { max: usize, split: Splitter },
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
        Framing(Rule::Lines { max })
    }

    /// Messages of at most `max` bytes, each after its length as a
    /// big-endian u16. The handler reads the message alone; its reply goes
    /// back after its own length, the same way. A length above `max` closes
    /// the connection as soon as the prefix is in, before any of the
    /// message arrives (reported as `Error::MessageTooLong`, counted in
    /// `Stats::too_long`).
    pub fn u16_prefixed(max: usize) -> Framing {
        Framing(Rule::Prefixed { width: 2, max: max.min(usize::from(u16::MAX)) })
    }

    /// As [`u16_prefixed`](Self::u16_prefixed), with a big-endian u32 length:
    /// a prefix of 4 GiB over `max` closes the connection at once, nothing
    /// of it buffered.
    pub fn u32_prefixed(max: usize) -> Framing {
        Framing(Rule::Prefixed { width: 4, max: max.min(u32::MAX as usize) })
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
    /// its delimiter needs [`lines`](Self::lines), which answers it.
    pub fn custom(max: usize, split: impl Fn(&[u8]) -> io::Result<Option<Split>> + Send + Sync + 'static) -> Framing {
        Framing(Rule::Custom { max, split: Arc::new(split) })
    }

    /// The largest message the framing takes (its length prefix aside).
    pub(crate) fn max(&self) -> usize {
        match &self.0 {
            Rule::Lines { max } | Rule::Custom { max, .. } | Rule::Prefixed { max, .. } => *max,
        }
    }

    /// The first message in `bytes`; `eof`: no more bytes will come.
    fn cut(&self, bytes: &[u8], eof: bool) -> Cut {
        let ended_inside = || Cut::Invalid("the connection closed inside a message".into());
        match &self.0 {
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
                let len = prefix.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
                match bytes.len() - width {
                    _ if len > *max => Cut::TooLong,
                    have if have >= len => Cut::Whole(Split { consumed: width + len, message: *width..width + len }),
                    _ if eof => ended_inside(),
                    _ => Cut::More,
                }
            }
            Rule::Custom { max, split } => match split(bytes) {
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

    /// Appends `reply` as it goes on the wire to `out`.
    pub(crate) fn frame(&self, reply: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if let Rule::Prefixed { width, .. } = self.0 {
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
        match &self.0 {
            Rule::Lines { max } => write!(f, "Framing::lines({max})"),
            Rule::Prefixed { width, max } => write!(f, "Framing::u{}_prefixed({max})", width * 8),
            Rule::Custom { max, .. } => write!(f, "Framing::custom({max}, ..)"),
        }
    }
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
}

impl Inbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.bytes.len()
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

    /// Takes the first whole message, if there is one; `eof`: no more bytes
    /// will come.
    pub(crate) fn next(&mut self, framing: &Framing, eof: bool) -> Result<Option<Vec<u8>>, Refused> {
        let rest = &self.bytes[self.start..];
        match framing.cut(rest, eof) {
            Cut::More => Ok(None),
            Cut::TooLong => Err(Refused::TooLong),
            Cut::Invalid(reason) => Err(Refused::Invalid(reason)),
            Cut::Whole(split) => {
                let message = rest[split.message].to_vec();
                self.start += split.consumed;
                if self.is_empty() {
                    // Idle again: give the memory back.
                    *self = Inbox::default();
                }
                Ok(Some(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every message `framing` cuts from `stream` when it arrives in the
    /// pieces `splits` make, then the end of the stream.
    fn messages(framing: &Framing, stream: &[u8], splits: &[usize]) -> Result<Vec<Vec<u8>>, Refused> {
        let mut inbox = Inbox::default();
        let mut got = Vec::new();
        let mut from = 0;
        for &at in splits.iter().chain([&stream.len()]) {
            inbox.push(&stream[from..at.max(from)]);
            from = at.max(from);
            while let Some(message) = inbox.next(framing, false)? {
                got.push(message);
            }
        }
        while let Some(message) = inbox.next(framing, true)? {
            got.push(message);
        }
        assert!(inbox.is_empty());
        Ok(got)
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
        assert_eq!(inbox.next(&Framing::lines(64), false).unwrap(), Some(b"17\n".to_vec()));
        assert_eq!(inbox.bytes.capacity(), 0);
    }
}
