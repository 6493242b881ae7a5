//! The crate's only `unsafe` code: raw libc calls socket2 and std do not
//! cover, by concern. Each block states why it is sound. Nothing here
//! imports anything else of the crate.

mod batch;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
mod names;
mod poll;
mod privileges;
mod process;
mod sockets;
mod unix;

pub(crate) use batch::DatagramBatch;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use epoll::{EDGE, ENDED, Epoll, EventFd, Events, ONESHOT, READ, WRITE};
pub(crate) use names::{nodename, resolve, reverse};
pub(crate) use poll::has_input;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) use poll::poller_add;
pub(crate) use privileges::{already_running_as, drop_privileges, group_id, user_ids};
pub(crate) use process::{ChildExit, fork_child, kill, reap, take_inherited};
#[cfg(feature = "systemd")]
pub(crate) use process::{register_listener_copy, spawn_with_fds, unregister_listener_copy};
pub(crate) use sockets::{NO_SIGNAL, accepted_blocking, is_listening, recv_datagram, recv_now, shutdown_both};
pub(crate) use unix::send_with_fds;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use unix::{Ids, peer_credentials, recv_with_ancillary, sendfile};
