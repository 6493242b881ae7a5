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

/// What came with a request beside its bytes: passed fds, sender
/// credentials, and for a datagram what a trusted balancer said about it.
#[derive(Debug, Default)]
pub(crate) struct Ancillary {
    pub fds: Vec<OwnedFd>,
    pub credentials: Option<Credentials>,
    #[cfg(feature = "proxy-protocol")]
    pub proxy: Option<Box<crate::proxy::ProxyHeader>>,
}

impl Credentials {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) fn from_ids((pid, uid, gid): crate::sys::Ids) -> Self {
        Credentials { pid, uid, gid }
    }

    /// The peer of a Unix stream connection, as it was when it connected
    /// (SO_PEERCRED; Linux only).
    pub(crate) fn of_peer(_socket: &socket2::Socket) -> Option<Credentials> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return crate::sys::peer_credentials(_socket).ok().map(Credentials::from_ids);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        None
    }
}

impl Ancillary {
    /// One receive on a Unix socket, keeping what came with it (Linux;
    /// elsewhere the bytes alone).
    pub(crate) fn receive(
        &mut self,
        socket: &socket2::Socket,
        buf: &mut [u8],
    ) -> std::io::Result<(usize, bool, socket2::SockAddr)> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut ids = None;
            let received = crate::sys::recv_with_ancillary(socket, buf, &mut self.fds, &mut ids);
            if let Some(ids) = ids {
                self.credentials = Some(Credentials::from_ids(ids));
            }
            received
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        crate::sys::recv_datagram(socket, buf)
    }
}
