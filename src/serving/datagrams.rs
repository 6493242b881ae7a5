//! The datagram path of the serving loop: one datagram at a time, or a
//! batch (recvmmsg/sendmmsg) on a sequential server, each admitted by the
//! same check.

use std::io;
use std::time::Instant;

use super::event_loop::Loop;
use super::turn::Taken;
use crate::ancillary::Ancillary;
use crate::hooks::Hooks;
use crate::options::Options;
use crate::runner::{self, Context, Scratch};
use crate::stats::Counters;
use crate::sys;
use crate::transport::Transport;
use crate::{Address, Error, RequestHandler, Result};

impl<T: Transport, H: RequestHandler> Loop<T, H> {
    /// Takes one datagram, or (batching) up to `budget` of them.
    pub(super) fn receive_and_dispatch(&mut self, budget: usize) -> Result<Taken> {
        if let Some(batch) = self.batch.take() {
            return self.receive_batch(batch, budget);
        }
        let (len, truncated, from) = match self.receive() {
            Ok(received) => received,
            Err(e) => return self.recover("receive", e),
        };
        let Loop { ctx, hooks, options, packet, scratch, .. } = self;
        let received = Received { from: Address::from_sock_addr(&from), at: Instant::now(), truncated };
        let admitted = admit_datagram(ctx, hooks, options, received, &packet[..len], scratch);
        let Some((peer, skip)) = admitted else {
            return Ok(Taken::Requests(1));
        };
        self.dispatcher.datagram(&self.ctx, &self.socket, &self.packet[skip..len], peer, &from, &mut self.scratch);
        // Fds the handler did not take are closed here.
        self.scratch.ancillary = Ancillary::default();
        Ok(Taken::Requests(1))
    }

    /// One datagram into the packet buffer; on Unix sockets with its passed
    /// fds and sender credentials (Linux).
    fn receive(&mut self) -> io::Result<(usize, bool, socket2::SockAddr)> {
        if self.ctx.server_address.is_unix() {
            return self.scratch.ancillary.receive(&self.socket, &mut self.packet);
        }
        sys::recv_datagram(&self.socket, &mut self.packet)
    }

    /// The batched datagram path: one recvmmsg, the handler on each datagram
    /// in order, one sendmmsg for the replies. Same semantics as one at a
    /// time: one request per datagram, one reply per request.
    fn receive_batch(&mut self, mut batch: sys::DatagramBatch, budget: usize) -> Result<Taken> {
        let mut scratch = Scratch::default();
        let received = batch.recv(&self.socket, budget);
        let count = match received {
            Ok(count) => count,
            Err(e) => {
                self.batch = Some(batch);
                return self.recover("receive", e);
            }
        };
        // One clock reading for the batch: its datagrams came together.
        let at = Instant::now();
        for i in 0..count {
            let (packet, truncated, from, reply) = batch.datagram(i);
            std::mem::swap(reply, &mut scratch.reply);
            let (ctx, hooks, options) = (&self.ctx, &mut self.hooks, &self.options);
            let received = Received { from: Address::from_sock_addr(&from), at, truncated };
            let admitted = admit_datagram(ctx, hooks, options, received, packet, &mut scratch);
            let Some((peer, skip)) = admitted else { continue };
            let send = runner::answer_datagram(&self.ctx, &self.socket, &packet[skip..], &peer, &from, &mut scratch).1;
            std::mem::swap(reply, &mut scratch.reply);
            if send {
                batch.reply_later(i);
            }
        }
        let ctx = &self.ctx;
        batch.send_replies(&self.socket, |to, e| runner::reply_failed(ctx, &Address::from_sock_addr(&to), e));
        let drained = count < batch.capacity().min(budget);
        self.batch = Some(batch);
        Ok(if drained { Taken::Drained(count) } else { Taken::Requests(count) })
    }
}

/// A datagram as it came: from whom, when, and whether it was cut short.
struct Received {
    from: Address,
    at: Instant,
    truncated: bool,
}

/// Counts a datagram just received and says whether to serve it, as whom,
/// and from which byte: not if it was truncated (reported), its PROXY header
/// is refused (reported), or `verify_request` refuses it. A trusted
/// balancer's v2 header names the client and is not part of the request;
/// what it says goes into `scratch`. The one check for the batched and the
/// one-at-a-time receive.
#[cfg_attr(not(feature = "proxy-protocol"), allow(unused_variables))]
fn admit_datagram<H>(
    ctx: &Context<H>,
    hooks: &mut Hooks,
    options: &Options,
    received: Received,
    packet: &[u8],
    scratch: &mut Scratch,
) -> Option<(Address, usize)> {
    let Received { from: peer, at, truncated } = received;
    let counters = ctx.counters();
    Counters::add(&counters.accepted, 1);
    if truncated {
        Counters::add(&counters.truncated, 1);
        (ctx.on_error)(&Error::Truncated { peer, max: options.max_packet_size });
        return None;
    }
    #[cfg(feature = "proxy-protocol")]
    let (peer, skip) = match crate::proxy::datagram_client(options.proxy_protocol.as_ref(), peer, packet) {
        Ok((peer, skip, header)) => {
            scratch.ancillary.proxy = header;
            (peer, skip)
        }
        Err(refused) => {
            Counters::add(&counters.proxy_refused, 1);
            (ctx.on_error)(&refused);
            return None;
        }
    };
    #[cfg(not(feature = "proxy-protocol"))]
    let skip = 0;
    if let Some(limiter) = &ctx.limiter {
        let uid = scratch.ancillary.credentials.map(|c| c.uid);
        // Dropped without a reply: an answer would amplify a flood.
        if !limiter.datagram(&peer, uid, at) {
            return None;
        }
    }
    if !hooks.verify_request(&peer) {
        Counters::add(&counters.refused, 1);
        return None;
    }
    Some((peer, skip))
}
