//! A fixed pool of worker threads fed through a queue. The queue's bound is
//! enforced by the dispatcher's capacity, so sending never blocks.
//!
//! The queue is a deque under a mutex with a condvar, not a channel whose
//! receiver workers take turns to lock: there a worker waits for a job
//! while holding the lock, so every job wakes two threads (the one that
//! gets it, and the next in line for the lock). Here a job wakes one.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use socket2::{SockAddr, Socket};

use super::capacity::Slot;
use super::config::WorkerPool;
use crate::adapter::{self, Context, Incoming, Scratch};
use crate::ancillary::Ancillary;
use crate::{Address, RequestHandler};

/// A request waiting for a worker, holding its capacity slot.
pub(crate) enum Job {
    Stream {
        // The slot first: a job dropped unrun untracks its connection
        // before the socket closes (fields drop in order).
        slot: Slot,
        conn: Incoming,
    },
    /// One framed message of a connection that goes back to the loop
    /// (the slot first, as above).
    Message { slot: Slot, framing: crate::serving::Framing, framed: crate::serving::Framed, message: Vec<u8> },
    Datagram {
        socket: Arc<Socket>,
        packet: Vec<u8>,
        peer: Address,
        reply_to: SockAddr,
        ancillary: Ancillary,
        slot: Slot,
    },
}

/// The jobs waiting for a worker.
#[derive(Default)]
struct Queue {
    state: Mutex<Jobs>,
    ready: Condvar,
}

#[derive(Default)]
struct Jobs {
    waiting: VecDeque<Job>,
    closing: bool,
    /// Workers still taking jobs: none left, a job would wait for ever.
    workers: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`; gives it back (`Some`) if no worker is left to take it.
    fn push(&self, job: Job) -> Option<Job> {
        let mut jobs = self.lock();
        if jobs.workers == 0 {
            return Some(job);
        }
        jobs.waiting.push_back(job);
        drop(jobs);
        self.ready.notify_one();
        None
    }

    /// The next job; `None` once the pool is closing and none is left.
    fn next(&self) -> Option<Job> {
        let mut jobs = self.lock();
        loop {
            if let Some(job) = jobs.waiting.pop_front() {
                return Some(job);
            }
            if jobs.closing {
                return None;
            }
            jobs = self.ready.wait(jobs).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn close(&self) {
        self.lock().closing = true;
        self.ready.notify_all();
    }
}

/// A worker's place in the queue's count: taken before its thread starts
/// (so a job submitted at once finds it), given up when the thread exits,
/// however, or when it never started.
struct Working(Arc<Queue>);

impl Working {
    fn new(queue: &Arc<Queue>) -> Self {
        queue.lock().workers += 1;
        Working(Arc::clone(queue))
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.lock().workers -= 1;
    }
}

pub(crate) struct Pool<H> {
    config: WorkerPool,
    queue: Option<Arc<Queue>>,
    workers: Vec<JoinHandle<()>>,
    handler: std::marker::PhantomData<fn() -> H>,
}

impl<H: RequestHandler> Pool<H> {
    pub(super) fn new(config: WorkerPool) -> Self {
        Pool { config, queue: None, workers: Vec::new(), handler: std::marker::PhantomData }
    }

    /// Queues `job`, starting the workers on first use (the context is final
    /// by then: a server made with `build` learns its address at bind).
    pub(super) fn submit(&mut self, ctx: &Context<H>, job: Job) -> Result<(), (&'static str, Address, io::Error)> {
        if self.queue.is_none()
            && let Err(e) = self.start(ctx)
        {
            return Err(("start the worker pool", job.peer().clone(), e));
        }
        let queue = self.queue.as_ref().expect("started above");
        match queue.push(job) {
            None => Ok(()),
            Some(job) => {
                Err(("queue a request", job.peer().clone(), io::Error::other("every worker thread has exited")))
            }
        }
    }

    fn start(&mut self, ctx: &Context<H>) -> io::Result<()> {
        let queue = Arc::new(Queue::default());
        for i in 0..self.config.workers {
            let mut builder = thread::Builder::new().name(format!("socketserver-worker-{i}"));
            if let Some(bytes) = self.config.stack_size {
                builder = builder.stack_size(bytes);
            }
            let (ctx, working) = (ctx.clone(), Working::new(&queue));
            self.workers.push(builder.spawn(move || work(&ctx, &working.0))?);
        }
        self.queue = Some(queue);
        Ok(())
    }
}

impl<H> Pool<H> {
    /// Closes the queue; workers serve what is queued, then exit and are joined.
    pub(super) fn close(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.close();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Job {
    fn peer(&self) -> &Address {
        match self {
            Job::Stream { conn, .. } => &conn.peer,
            Job::Message { framed, .. } => &framed.conn.peer,
            Job::Datagram { peer, .. } => peer,
        }
    }
}

fn work<H: RequestHandler>(ctx: &Context<H>, jobs: &Queue) {
    let mut scratch = Scratch::default();
    while let Some(job) = jobs.next() {
        match job {
            Job::Stream { mut slot, conn } => {
                adapter::serve_stream(ctx, conn, || slot.untrack(), adapter::HandBack::Wake);
            }
            Job::Message { mut slot, framing, framed, message } => {
                super::answer_message(ctx, &framing, framed, &message, true, &mut scratch, || slot.untrack());
            }
            Job::Datagram { socket, packet, peer, reply_to, ancillary, slot: _slot } => {
                scratch.ancillary = ancillary;
                adapter::serve_datagram(ctx, &socket, &packet, &peer, &reply_to, &mut scratch);
                scratch.ancillary = Ancillary::default();
            }
        }
    }
}
