//! What a Unix socket carries beside the bytes: file descriptors passed by
//! the peer (SCM_RIGHTS) and the peer process's credentials.

use std::os::fd::OwnedFd;

/// The process credentials of a Unix-socket peer: for a stream, those it
/// had when it connected (SO_PEERCRED); for a datagram, those the kernel
/// attached to it (SCM_CREDENTIALS). Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Credentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Control data received with a request: passed fds, sender credentials.
#[derive(Debug, Default)]
pub(crate) struct Ancillary {
    pub fds: Vec<OwnedFd>,
    pub credentials: Option<Credentials>,
}
