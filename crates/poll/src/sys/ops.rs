//! The operations in flight, shared by both backends: a table that owns each
//! operation (its file and buffer) until its last completion arrives, and
//! the completions reaped and not yet taken.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;

use crate::op::{Completion, Op, OpId, Output};

/// A map keyed by ids that count up: hashed by one multiplication (the
/// standard hasher's SipHash costs more than the rest of an operation's
/// bookkeeping, and ids need no defence against chosen keys).
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of a `u64` id (see `op::IdHasher`).
#[derive(Default, Debug, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The operations in flight, by id. Ids count up from 1 and are never
/// reused, so that a stale id names nothing (they stay below 2^62, which
/// the io_uring backend uses as a tag: at a billion operations a second,
/// that is 146 years).
#[derive(Debug, Default)]
pub(crate) struct OpTable {
    ops: IdMap<Slot>,
    next: u64,
    /// Completions reaped, for [`Poller::take_completions`](crate::Poller::take_completions).
    pub(crate) ready: VecDeque<Completion>,
}

#[derive(Debug)]
enum Slot {
    Here(Op),
    /// Handed to a thread that sends the completion back.
    Away,
}

impl OpTable {
    /// Takes `op` in; its id.
    pub(crate) fn insert(&mut self, op: Op) -> OpId {
        self.next += 1;
        self.ops.insert(self.next, Slot::Here(op));
        OpId(self.next)
    }

    /// The operation `id`, if it is in flight here.
    pub(crate) fn get(&self, id: OpId) -> Option<&Op> {
        match self.ops.get(&id.0)? {
            Slot::Here(op) => Some(op),
            Slot::Away => None,
        }
    }

    /// The operation `id`, mutably, if it is in flight here.
    pub(crate) fn get_mut(&mut self, id: OpId) -> Option<&mut Op> {
        match self.ops.get_mut(&id.0)? {
            Slot::Here(op) => Some(op),
            Slot::Away => None,
        }
    }

    /// Whether `id` is in flight (here or away).
    pub(crate) fn contains(&self, id: OpId) -> bool {
        self.ops.contains_key(&id.0)
    }

    /// Takes the operation `id` out to be run elsewhere; it stays in flight
    /// until [`returned`](OpTable::returned) brings its completion.
    pub(crate) fn send_away(&mut self, id: OpId) -> Option<Op> {
        let slot = self.ops.get_mut(&id.0)?;
        match std::mem::replace(slot, Slot::Away) {
            Slot::Here(op) => Some(op),
            Slot::Away => None,
        }
    }

    /// An operation sent away comes back unrun.
    pub(crate) fn bring_back(&mut self, id: OpId, op: Op) {
        if let Some(slot @ Slot::Away) = self.ops.get_mut(&id.0) {
            *slot = Slot::Here(op);
        }
    }

    /// The completion of an operation run elsewhere came back.
    pub(crate) fn returned(&mut self, c: Completion) {
        if let Some(Slot::Away) = self.ops.get(&c.id.0) {
            self.ops.remove(&c.id.0);
            self.shrink();
            self.ready.push_back(c);
        }
    }

    /// Takes the operation `id` out: it has completed for good.
    pub(crate) fn remove(&mut self, id: OpId) -> Option<Op> {
        // One lookup: what is away (rare: the epoll backend's file pool)
        // goes back in.
        match self.ops.remove(&id.0)? {
            Slot::Here(op) => {
                self.shrink();
                Some(op)
            }
            Slot::Away => {
                self.ops.insert(id.0, Slot::Away);
                None
            }
        }
    }

    /// Once a burst has drained, its memory comes back.
    fn shrink(&mut self) {
        if self.ops.is_empty() && self.ops.capacity() > 1024 {
            self.ops = IdMap::default();
        }
    }

    /// Operations in flight.
    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// The ids of the operations in flight here.
    pub(crate) fn ids(&self) -> Vec<OpId> {
        self.ops
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Here(_)))
            .map(|(id, _)| OpId(*id))
            .collect()
    }

    /// Reports the final completion of `id` with `result`, handing back
    /// `output` (for an accept or a receive of data) or else what the
    /// operation holds (its buffer, if it has one).
    pub(crate) fn finish(&mut self, id: OpId, result: io::Result<usize>, output: Option<Output>) {
        let Some(op) = self.remove(id) else {
            return;
        };
        let output = match output {
            Some(o) => o,
            None => op.into_buf().map_or(Output::Nothing, Output::Buf),
        };
        self.ready.push_back(Completion {
            id,
            result,
            more: false,
            output,
        });
    }

    /// Reports one completion of a multishot operation that goes on.
    pub(crate) fn more(&mut self, id: OpId, result: io::Result<usize>, output: Output) {
        self.ready.push_back(Completion {
            id,
            result,
            more: true,
            output,
        });
    }

    /// Every operation here, taken out (for a poller that is going away).
    pub(crate) fn drain(&mut self) -> Vec<(OpId, Op)> {
        let ids = self.ids();
        ids.into_iter()
            .filter_map(|id| self.remove(id).map(|op| (id, op)))
            .collect()
    }
}
