//! A fixed pool of worker threads fed through a queue. The queue's bound is
//! enforced by the dispatcher's capacity, so sending never blocks.
//!
//! The queue is a deque under a mutex with a condvar, not a channel whose
//! receiver workers take turns to lock: there a worker waits for a job
//! while holding the lock, so every job wakes two threads (the one that
//! gets it, and the next in line for the lock). Here a job wakes one, and
//! only a sleeping one: the condvar's `notify_one` is a `futex` call even
//! with nobody waiting (half the notifies of a busy framed pool woke
//! nobody), so the queue counts its sleepers and a push with none skips it.
//! Once connections park with the workers (`parking.rs`), idle workers
//! wait there instead, and a push bumps the parking's counter.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use socket2::{SockAddr, Socket};

use super::capacity::{Capacity, Slot};
use super::config::WorkerPool;
use super::parking::{self, Parking, Resume, Woke};
use crate::ancillary::Ancillary;
use crate::handler_io::Incoming;
use crate::runner::{self, Context, MayHandBack, Scratch};
use crate::{Address, RequestHandler};

/// A request waiting for a worker, holding its capacity slot.
pub(crate) enum Job<H> {
    Stream {
        // The slot first: a job dropped unrun untracks its connection
        // before the socket closes (fields drop in order).
        slot: Slot,
        conn: Incoming,
    },
    /// Work the loop made ready (the slot first, as above).
    Work { slot: Slot, work: Box<dyn super::Work<H>> },
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
struct Queue<H> {
    state: Mutex<Jobs<H>>,
    /// Where idle workers wait: on `ready`, or, once connections park with
    /// them, in `parking`'s epoll instance.
    ready: Condvar,
    parking: Option<Arc<Parking>>,
}

impl<H> Queue<H> {
    fn new(parking: Option<Arc<Parking>>) -> Self {
        let jobs = Jobs { waiting: VecDeque::new(), closing: false, workers: 0, sleeping: 0, woken: 0, parks: false };
        Queue { state: Mutex::new(jobs), ready: Condvar::new(), parking }
    }
}

/// What a worker with no job does next.
enum Idle {
    /// Wait in the parking's epoll instance (counted as sleeping).
    Wait(Arc<Parking>),
    /// The pool is closing and the queue is empty.
    Exit,
}

struct Jobs<H> {
    waiting: VecDeque<Job<H>>,
    closing: bool,
    /// Workers still taking jobs: none left, a job would wait for ever.
    workers: usize,
    /// Workers waiting on `ready`: a push wakes one only if one sleeps
    /// that no earlier push woke (`woken`: notified, not yet back under the
    /// lock). Counted under the lock the wait releases, so a worker about to
    /// sleep is counted before a push can look. Once workers wait in the
    /// parking (`parks`), the workers waiting there, and every push with one
    /// bumps its counter: two bumps may wake one worker (see `parking.rs`),
    /// so none is taken as owed.
    sleeping: usize,
    woken: usize,
    /// Idle workers wait in the parking: connections park there.
    parks: bool,
}

impl<H> Queue<H> {
    fn lock(&self) -> MutexGuard<'_, Jobs<H>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`; gives it back (`Some`) if no worker is left to take it.
    fn push(&self, job: Job<H>) -> Option<Job<H>> {
        let mut jobs = self.lock();
        if jobs.workers == 0 {
            return Some(job);
        }
        jobs.waiting.push_back(job);
        if jobs.parks
            && let Some(parking) = &self.parking
        {
            let wake = jobs.sleeping > 0;
            drop(jobs);
            if wake {
                parking.signal();
            }
            return None;
        }
        let wake = jobs.sleeping > jobs.woken;
        jobs.woken += usize::from(wake);
        drop(jobs);
        if wake {
            self.ready.notify_one();
        }
        None
    }

    /// The next job, waiting for one on the condvar; or, once workers wait
    /// in the parking, the worker is to wait there (counted); or it exits.
    /// A worker that takes a job there and leaves more queued, with workers
    /// waiting, wakes one more: the bump that queued it may have woken this
    /// worker only.
    fn turn(&self) -> Result<Job<H>, Idle> {
        let mut jobs = self.lock();
        loop {
            if let Some(job) = jobs.waiting.pop_front() {
                let more = jobs.parks && !jobs.waiting.is_empty() && jobs.sleeping > 0;
                drop(jobs);
                if more && let Some(parking) = &self.parking {
                    parking.signal();
                }
                return Ok(job);
            }
            if jobs.closing {
                return Err(Idle::Exit);
            }
            jobs.sleeping += 1;
            if jobs.parks
                && let Some(parking) = &self.parking
            {
                return Err(Idle::Wait(Arc::clone(parking)));
            }
            jobs = self.ready.wait(jobs).unwrap_or_else(PoisonError::into_inner);
            jobs.sleeping -= 1;
            // Woken by a push, or spuriously: either way this worker looks
            // at the queue now, so one fewer wake-up is owed.
            jobs.woken = jobs.woken.saturating_sub(1);
        }
    }

    /// A worker back from waiting in the parking.
    fn woke(&self) {
        self.lock().sleeping -= 1;
    }

    /// Idle workers wait in the parking from now on: those on the condvar
    /// move there (a job queued meanwhile bumps the parking's counter, which
    /// reports to the first of them to wait there).
    fn park_idle(&self) {
        let mut jobs = self.lock();
        if jobs.parks || self.parking.is_none() {
            return;
        }
        jobs.parks = true;
        jobs.woken = jobs.sleeping;
        drop(jobs);
        self.ready.notify_all();
    }

    fn close(&self) {
        self.lock().closing = true;
        if let Some(parking) = &self.parking {
            parking.wake_all();
        }
        self.ready.notify_all();
    }
}

/// A worker's place in the queue's count: taken before its thread starts
/// (so a job submitted at once finds it), given up when the thread exits,
/// however, or when it never started.
struct Working<H>(Arc<Queue<H>>);

impl<H> Working<H> {
    fn new(queue: &Arc<Queue<H>>) -> Self {
        queue.lock().workers += 1;
        Working(Arc::clone(queue))
    }
}

impl<H> Drop for Working<H> {
    fn drop(&mut self) {
        self.0.lock().workers -= 1;
    }
}

/// What a pool's workers need to answer parked connections: where
/// they wait, the loop's side that holds the connections, and the count a
/// request takes its slot from.
pub(crate) struct Parked<H> {
    pub parking: Arc<Parking>,
    pub resume: Arc<dyn Resume<H>>,
    pub capacity: Arc<Capacity>,
}

impl<H> Clone for Parked<H> {
    fn clone(&self) -> Self {
        Parked {
            parking: Arc::clone(&self.parking),
            resume: Arc::clone(&self.resume),
            capacity: Arc::clone(&self.capacity),
        }
    }
}

pub(crate) struct Pool<H> {
    config: WorkerPool,
    queue: Option<Arc<Queue<H>>>,
    workers: Vec<JoinHandle<()>>,
    parked: Option<Parked<H>>,
}

impl<H: RequestHandler> Pool<H> {
    pub(super) fn new(config: WorkerPool, parked: Option<Parked<H>>) -> Self {
        Pool { config, queue: None, workers: Vec::new(), parked }
    }

    /// Queues `job`, starting the workers on first use (the context is final
    /// by then: a server made with `build` learns its address at bind).
    pub(super) fn submit(&mut self, ctx: &Context<H>, job: Job<H>) -> Result<(), (&'static str, Address, io::Error)> {
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

    /// Starts the workers, if connections park with them: the loop parks
    /// a framed connection that waits for bytes before any job would have
    /// started them, and a parked connection has no one else to wake.
    pub(super) fn ready_to_park(&mut self, ctx: &Context<H>) {
        if self.queue.is_none()
            && self.parked.is_some()
            && let Err(e) = self.start(ctx)
        {
            log::error!("worker pool: cannot start its workers: {e}");
        }
    }

    /// Starts the workers, once: those that started serve even if one
    /// fails to (the queue is kept), and none are started twice.
    fn start(&mut self, ctx: &Context<H>) -> io::Result<()> {
        let queue = Arc::new(Queue::new(self.parked.as_ref().map(|parked| Arc::clone(&parked.parking))));
        self.queue = Some(Arc::clone(&queue));
        if let Some(parked) = &self.parked {
            // Weak: the queue holds the parking.
            let queue = Arc::downgrade(&queue);
            parked.parking.when_used(Box::new(move || {
                if let Some(queue) = queue.upgrade() {
                    queue.park_idle();
                }
            }));
        }
        for i in 0..self.config.workers {
            let mut builder = thread::Builder::new().name(format!("socketserver-worker-{i}"));
            if let Some(bytes) = self.config.stack_size {
                builder = builder.stack_size(bytes);
            }
            let (ctx, working, parked) = (ctx.clone(), Working::new(&queue), self.parked.clone());
            self.workers.push(builder.spawn(move || work(&ctx, &working.0, parked.as_ref()))?);
        }
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

impl<H> Job<H> {
    fn peer(&self) -> &Address {
        match self {
            Job::Stream { conn, .. } => &conn.peer,
            Job::Work { work, .. } => work.connection().1,
            Job::Datagram { peer, .. } => peer,
        }
    }
}

/// A worker: queued jobs first; idle, it waits on the queue, or, once
/// connections park with the workers, with them, and answers the one that
/// reports.
fn work<H: RequestHandler>(ctx: &Context<H>, jobs: &Queue<H>, parked: Option<&Parked<H>>) {
    let mut scratch = Scratch::default();
    let mut events = parking::events();
    loop {
        match jobs.turn() {
            Ok(job) => run(ctx, job, &mut scratch),
            Err(Idle::Exit) => return,
            Err(Idle::Wait(parking)) => {
                let woke = parking.wait(&mut events);
                jobs.woke();
                match woke {
                    Ok(Woke::Parked { key, arm, ended }) => {
                        let Some(parked) = parked else { continue };
                        let capacity = &parked.capacity;
                        let mut slot = |socket: &_, peer: &_| capacity.take_message(socket, peer);
                        parked.resume.resume(key, arm, ended, ctx, &mut scratch, &mut slot);
                    }
                    Ok(Woke::Jobs) => {}
                    // Only a broken epoll instance fails a wait: the
                    // queue still has this worker's attention, and a
                    // pause keeps a failing wait from spinning.
                    Err(e) => {
                        log::error!("worker pool: waiting for parked connections failed: {e}");
                        thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
        }
    }
}

fn run<H: RequestHandler>(ctx: &Context<H>, job: Job<H>, scratch: &mut Scratch) {
    match job {
        Job::Stream { mut slot, conn } => {
            runner::serve_stream(ctx, conn, || slot.untrack(), MayHandBack::Wake);
        }
        Job::Work { mut slot, work } => work.run_boxed(ctx, scratch, true, &mut || slot.untrack()),
        Job::Datagram { socket, packet, peer, reply_to, ancillary, slot: _slot } => {
            scratch.ancillary = ancillary;
            runner::serve_datagram(ctx, &socket, &packet, &peer, &reply_to, scratch);
            scratch.ancillary = Ancillary::default();
        }
    }
}
