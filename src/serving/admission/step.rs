//! How one step of an arrival stage ended (a PROXY header read, a TLS
//! handshake step), for the stages and the loop that moves connections on.

/// How one step of a stage ended for a connection, when it ended the stage.
#[cfg_attr(not(any(feature = "proxy-protocol", feature = "tls")), allow(dead_code, reason = "no stage can fail"))]
pub(super) enum Step {
    /// Through the stage: on to the next.
    Through,
    /// The peer closed before sending a byte (a port check, a TCP health check).
    Gone,
    /// Refused; the reason says why.
    Failed(String),
}
