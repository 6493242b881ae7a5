//! The clients a server remembers: a fixed number of entries, each a
//! client's open connections and token bucket, found through an index made
//! at full size when the server is built and kept in least-recently-seen
//! order by links inside the entries (an LRU list, as nginx's limit zones
//! keep theirs). Every operation is O(1) and allocates nothing.
//!
//! The index is its own open-addressing table rather than a `HashMap`: a
//! `HashMap` that forgets and learns keys for ever fills with tombstones
//! and grows (to twice its memory, measured), where this one deletes by
//! shifting back (Knuth's algorithm R) and never grows. Keys are hashed
//! with std's per-process random SipHash keys, so no client can choose
//! addresses that collide.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::{Key, WhenFull};

/// No entry: the end of the list.
const NIL: u32 = u32::MAX;

/// How many of the least recently seen clients a full table looks through
/// for one it can forget without losing anything.
const LOOK_FOR_IDLE: usize = 8;

/// One remembered client.
#[derive(Debug, Clone)]
struct Entry {
    key: Key,
    /// Its connections open now.
    open: u32,
    /// Changes when the entry is given to another client, so a connection
    /// of the one before does not count itself off the new one.
    generation: u32,
    /// Requests it may make now, up to the burst.
    tokens: f64,
    /// When `tokens` was last brought up to date, in ns of the limiter's clock.
    refilled: u64,
    /// Towards the most recently seen (`prev`) and the least (`next`).
    prev: u32,
    next: u32,
}

/// Why a client was not let through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Over {
    /// It holds its limit of open connections.
    Connections,
    /// It has no token; one comes in this many ns.
    Rate { wait_ns: u64 },
    /// The table is full of clients it cannot forget (`WhenFull::RefuseNew`).
    Full,
}

/// A client's place, for counting its connection off when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    index: u32,
    generation: u32,
}

/// What the table checks a client against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub connections: Option<u32>,
    /// Tokens a second, and the burst.
    pub rate: Option<(f64, u32)>,
    pub when_full: WhenFull,
}

pub(crate) struct Table {
    index: Index,
    entries: Vec<Entry>,
    capacity: usize,
    /// The most recently seen client, and the least.
    head: u32,
    tail: u32,
}

impl Table {
    /// A table for `capacity` clients, its memory taken now.
    pub(crate) fn new(capacity: usize) -> Table {
        Table { index: Index::new(capacity), entries: Vec::with_capacity(capacity), capacity, head: NIL, tail: NIL }
    }

    /// A new connection of `key`, at `now` (ns): counted open unless it is
    /// over a limit; `charge`: it is a request, and takes a token.
    pub(crate) fn connect(&mut self, key: Key, now: u64, rules: &Rules, charge: bool) -> Result<Place, Over> {
        let index = self.place(key, now, rules)?;
        let entry = &mut self.entries[index as usize];
        if rules.connections.is_some_and(|limit| entry.open >= limit) {
            return Err(Over::Connections);
        }
        if charge {
            take(entry, now, rules)?;
        }
        entry.open += 1;
        Ok(Place { index, generation: entry.generation })
    }

    /// A connection counted by [`connect`](Self::connect) closed.
    pub(crate) fn release(&mut self, place: Place) {
        if let Some(entry) = self.entries.get_mut(place.index as usize)
            && entry.generation == place.generation
        {
            entry.open = entry.open.saturating_sub(1);
        }
    }

    /// A request of `key` at `now`: takes a token.
    pub(crate) fn request(&mut self, key: Key, now: u64, rules: &Rules) -> Result<(), Over> {
        let index = self.place(key, now, rules)?;
        take(&mut self.entries[index as usize], now, rules)
    }

    /// The entry of `key`, found or made, now the most recently seen.
    fn place(&mut self, key: Key, now: u64, rules: &Rules) -> Result<u32, Over> {
        if let Some(index) = self.index.find(&key, &self.entries) {
            self.bring_forward(index);
            return Ok(index);
        }
        let burst = rules.rate.map_or(0.0, |(_, burst)| f64::from(burst));
        let fresh = |generation| Entry { key, open: 0, generation, tokens: burst, refilled: now, prev: NIL, next: NIL };
        let index = if self.entries.len() < self.capacity {
            self.entries.push(fresh(0));
            (self.entries.len() - 1) as u32
        } else {
            let index = self.to_forget(now, rules)?;
            self.unlink(index);
            let old = self.entries[index as usize].key;
            self.index.remove(&old, &self.entries);
            let generation = self.entries[index as usize].generation.wrapping_add(1);
            self.entries[index as usize] = fresh(generation);
            index
        };
        self.index.insert(&key, index);
        self.link_front(index);
        Ok(index)
    }

    /// The client a full table forgets: one of the least recently seen
    /// that holds nothing and owes nothing, else (`ForgetOldest`) the
    /// least recently seen.
    fn to_forget(&self, now: u64, rules: &Rules) -> Result<u32, Over> {
        let mut at = self.tail;
        for _ in 0..LOOK_FOR_IDLE {
            let Some(entry) = self.entries.get(at as usize) else { break };
            let owes = rules.rate.is_some_and(|(rate, burst)| refilled(entry, now, rate, burst) < f64::from(burst));
            if entry.open == 0 && !owes {
                return Ok(at);
            }
            at = entry.prev;
        }
        match rules.when_full {
            WhenFull::RefuseNew => Err(Over::Full),
            _ => Ok(self.tail),
        }
    }

    fn bring_forward(&mut self, index: u32) {
        if self.head != index {
            self.unlink(index);
            self.link_front(index);
        }
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next) = {
            let entry = &self.entries[index as usize];
            (entry.prev, entry.next)
        };
        match prev {
            NIL => self.head = next,
            prev => self.entries[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.entries[next as usize].prev = prev,
        }
    }

    fn link_front(&mut self, index: u32) {
        let old_head = self.head;
        {
            let entry = &mut self.entries[index as usize];
            entry.prev = NIL;
            entry.next = old_head;
        }
        match old_head {
            NIL => self.tail = index,
            head => self.entries[head as usize].prev = index,
        }
        self.head = index;
    }

    /// The bytes the table holds, whatever it remembers.
    #[cfg(test)]
    fn memory(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.index.slots.capacity() * 4
    }
}

/// Where each remembered client's entry is: slots holding entry numbers,
/// at least twice as many as entries (so probes stay short), found by
/// linear probing from the key's hash.
struct Index {
    slots: Vec<u32>,
    mask: usize,
    hasher: RandomState,
}

impl Index {
    fn new(capacity: usize) -> Index {
        let len = (capacity * 2).next_power_of_two();
        Index { slots: vec![NIL; len], mask: len - 1, hasher: RandomState::new() }
    }

    fn home(&self, key: &Key) -> usize {
        self.hasher.hash_one(key) as usize & self.mask
    }

    /// The slot holding `key`'s entry, or the empty one it would go in.
    fn slot(&self, key: &Key, entries: &[Entry]) -> (usize, Option<u32>) {
        let mut at = self.home(key);
        loop {
            match self.slots[at] {
                NIL => return (at, None),
                index if entries[index as usize].key == *key => return (at, Some(index)),
                _ => at = (at + 1) & self.mask,
            }
        }
    }

    fn find(&self, key: &Key, entries: &[Entry]) -> Option<u32> {
        self.slot(key, entries).1
    }

    /// Records that `key`'s entry is `index`; `key` must not be in yet.
    fn insert(&mut self, key: &Key, index: u32) {
        let mut at = self.home(key);
        while self.slots[at] != NIL {
            at = (at + 1) & self.mask;
        }
        self.slots[at] = index;
    }

    /// Forgets `key`, moving back the keys probed past it so that each is
    /// still found from its home slot.
    fn remove(&mut self, key: &Key, entries: &[Entry]) {
        let (mut hole, Some(_)) = self.slot(key, entries) else { return };
        let mut at = hole;
        loop {
            at = (at + 1) & self.mask;
            let index = self.slots[at];
            if index == NIL {
                break;
            }
            let home = self.home(&entries[index as usize].key);
            // Whether `home` lies cyclically in (hole, at]: then it stays.
            let stays = if hole <= at { hole < home && home <= at } else { hole < home || home <= at };
            if !stays {
                self.slots[hole] = index;
                hole = at;
            }
        }
        self.slots[hole] = NIL;
    }
}

/// `entry`'s tokens at `now`, refilled at `rate` a second up to `burst`.
fn refilled(entry: &Entry, now: u64, rate: f64, burst: u32) -> f64 {
    let elapsed = now.saturating_sub(entry.refilled) as f64 / 1e9;
    (entry.tokens + elapsed * rate).min(f64::from(burst))
}

/// Takes one of `entry`'s tokens, if the rules have a rate.
fn take(entry: &mut Entry, now: u64, rules: &Rules) -> Result<(), Over> {
    let Some((rate, burst)) = rules.rate else { return Ok(()) };
    entry.tokens = refilled(entry, now, rate, burst);
    entry.refilled = now.max(entry.refilled);
    if entry.tokens >= 1.0 {
        entry.tokens -= 1.0;
        Ok(())
    } else {
        Err(Over::Rate { wait_ns: ((1.0 - entry.tokens) / rate * 1e9).ceil() as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(n: u32) -> Key {
        Key::V4(n.into())
    }

    fn rules(connections: Option<u32>, rate: Option<(f64, u32)>, when_full: WhenFull) -> Rules {
        Rules { connections, rate, when_full }
    }

    #[test]
    fn a_client_holds_its_limit_of_connections_and_gets_one_back_when_one_closes() {
        let r = rules(Some(2), None, WhenFull::ForgetOldest);
        let mut t = Table::new(4);
        let a = t.connect(v4(1), 0, &r, false).unwrap();
        t.connect(v4(1), 0, &r, false).unwrap();
        assert_eq!(t.connect(v4(1), 0, &r, false), Err(Over::Connections));
        assert!(t.connect(v4(2), 0, &r, false).is_ok(), "another client is not affected");
        t.release(a);
        assert!(t.connect(v4(1), 0, &r, false).is_ok());
    }

    #[test]
    fn a_full_table_forgets_an_idle_client_first_then_the_oldest_or_refuses() {
        let r = rules(Some(1), None, WhenFull::ForgetOldest);
        let mut t = Table::new(3);
        // 1 and 2 hold a connection; 3 closed its own.
        t.connect(v4(1), 0, &r, false).unwrap();
        t.connect(v4(2), 0, &r, false).unwrap();
        let three = t.connect(v4(3), 0, &r, false).unwrap();
        t.release(three);
        t.connect(v4(4), 0, &r, false).unwrap();
        let known = |t: &Table, n| t.index.find(&v4(n), &t.entries).is_some();
        assert!(known(&t, 1) && known(&t, 2), "the idle client went first");
        assert!(!known(&t, 3));
        // Nothing idle: the least recently seen (1) is forgotten, fail open.
        t.connect(v4(5), 0, &r, false).unwrap();
        assert!(!known(&t, 1));
        // Its old connection closing does not count off whoever has its entry now.
        let mut refusing = Table::new(2);
        let rr = rules(Some(1), None, WhenFull::RefuseNew);
        refusing.connect(v4(1), 0, &rr, false).unwrap();
        refusing.connect(v4(2), 0, &rr, false).unwrap();
        assert_eq!(refusing.connect(v4(3), 0, &rr, false), Err(Over::Full));
    }

    #[test]
    fn a_forgotten_clients_connection_closing_does_not_free_the_new_owner() {
        let r = rules(Some(1), None, WhenFull::ForgetOldest);
        let mut t = Table::new(1);
        let old = t.connect(v4(1), 0, &r, false).unwrap();
        t.connect(v4(2), 0, &r, false).unwrap();
        t.release(old);
        assert_eq!(t.connect(v4(2), 0, &r, false), Err(Over::Connections));
    }

    #[test]
    fn a_million_clients_through_ten_thousand_entries_take_no_more_memory() {
        let r = rules(Some(4), Some((10.0, 5)), WhenFull::ForgetOldest);
        let mut t = Table::new(10_000);
        let before = (t.memory(), t.index.slots.capacity(), t.entries.capacity());
        for n in 0..1_000_000u32 {
            let _ = t.connect(v4(n), u64::from(n) * 1000, &r, true);
        }
        assert_eq!((t.memory(), t.index.slots.capacity(), t.entries.capacity()), before);
        // Every one remembered is found, and only those.
        let found = (0..1_000_000u32).filter(|&n| t.index.find(&v4(n), &t.entries).is_some()).count();
        assert_eq!(found, 10_000);
        assert!((990_000..1_000_000).all(|n| t.index.find(&v4(n), &t.entries).is_some()), "the most recent are kept");
    }

    #[test]
    fn per_client_table_memory_is_as_stated() {
        for capacity in [1, 100, 1000, 10_000, 16_385, 100_000] {
            let t = Table::new(capacity);
            let per = t.memory() / capacity;
            assert!(per <= super::super::PerClient::BYTES_PER_CLIENT, "{capacity} clients: {per} bytes each");
        }
    }

    proptest! {
        /// Whatever clients come and go through a small table (so that
        /// entries are forgotten and keys collide), the index finds exactly
        /// the clients the entries hold.
        #[test]
        fn the_index_finds_exactly_the_remembered_clients(
            clients in proptest::collection::vec(0u32..64, 1..400),
            capacity in 1usize..12,
        ) {
            let r = rules(Some(1), None, WhenFull::ForgetOldest);
            let mut t = Table::new(capacity);
            for (i, n) in clients.iter().enumerate() {
                if let Ok(place) = t.connect(v4(*n), 0, &r, false)
                    && i % 3 == 0
                {
                    t.release(place);
                }
                let held: std::collections::HashSet<Key> = t.entries.iter().map(|e| e.key).collect();
                for m in 0..64u32 {
                    prop_assert_eq!(t.index.find(&v4(m), &t.entries).is_some(), held.contains(&v4(m)), "client {}", m);
                }
            }
        }

        /// However requests come, a client is let through at most
        /// rate x time + burst times.
        #[test]
        fn the_bucket_never_admits_more_than_rate_times_time_plus_burst(
            rate in 1.0f64..5000.0,
            burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..5_000_000, 1..2000),
        ) {
            let r = rules(None, Some((rate, burst)), WhenFull::ForgetOldest);
            let mut t = Table::new(1);
            let (mut now, mut admitted) = (0u64, 0u64);
            for gap in gaps {
                now += gap;
                if t.request(v4(1), now, &r).is_ok() {
                    admitted += 1;
                }
                let allowed = rate * now as f64 / 1e9 + f64::from(burst);
                prop_assert!(admitted as f64 <= allowed + 1e-6, "{admitted} admitted by {now} ns, at most {allowed}");
            }
        }
    }

    #[test]
    fn a_client_over_its_rate_is_told_when_its_next_token_comes() {
        let r = rules(None, Some((10.0, 2)), WhenFull::ForgetOldest);
        let mut t = Table::new(1);
        assert!(t.request(v4(1), 0, &r).is_ok());
        assert!(t.request(v4(1), 0, &r).is_ok());
        assert_eq!(t.request(v4(1), 0, &r), Err(Over::Rate { wait_ns: 100_000_000 }));
        assert!(t.request(v4(1), 100_000_000, &r).is_ok());
    }
}
