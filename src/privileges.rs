//! Starting as root to bind a privileged port, then serving as someone
//! else: look up the ids, bind every socket, then [`drop_to`] them.
//!
//! ```no_run
//! # use socketserver::{privileges, Request, TcpServer};
//! let ids = privileges::lookup("nobody", Some("nogroup"))?;
//! let mut server = TcpServer::bind("0.0.0.0:81", |_: &mut Request<'_>| Ok(()))?; // as root
//! privileges::drop_to(ids)?; // before serving; forked children inherit it
//! server.serve_forever()?;
//! # Ok::<(), socketserver::Error>(())
//! ```

use crate::{Error, Result, sys};

/// A user and group to serve as (their numeric ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ids {
    /// The user id.
    pub uid: u32,
    /// The group id: the named group's, or the user's primary group.
    pub gid: u32,
}

/// The ids of `user`, and of `group` if given (else the user's primary group).
///
/// # Errors
///
/// [`Error::Privileges`] naming the user or group that does not exist.
pub fn lookup(user: &str, group: Option<&str>) -> Result<Ids> {
    let (uid, primary) =
        sys::user_ids(user).map_err(|source| Error::Privileges { who: format!("user {user:?}"), source })?;
    let gid = match group {
        Some(group) => {
            sys::group_id(group).map_err(|source| Error::Privileges { who: format!("group {group:?}"), source })?
        }
        None => primary,
    };
    Ok(Ids { uid, gid })
}

/// Serves as `ids` from now on: supplementary groups are dropped, then the
/// group and the user are set (`setgroups`, `setgid`, `setuid`, in that
/// order), and the process checks that it cannot become root again. Call it
/// after every socket is bound and before serving.
///
/// A process already running as `ids` (and not as root) has nothing to
/// drop: this returns `Ok` at once. That is the successor of a restart
/// (feature `systemd`), started with the same arguments by a server that
/// had already dropped to `ids`.
///
/// # Errors
///
/// [`Error::Privileges`] if any step fails (not running as root, say). The
/// process may then be half-changed: do not serve, exit.
pub fn drop_to(ids: Ids) -> Result<()> {
    if sys::already_running_as(ids.uid, ids.gid) {
        return Ok(());
    }
    sys::drop_privileges(ids.uid, ids.gid)
        .map_err(|source| Error::Privileges { who: format!("uid {} gid {}", ids.uid, ids.gid), source })
}
