//! Request/reply channels, as pure atomics over shared memory, like `algo.rs`.
//!
//! # Layout
//!
//! After the control page come `capacity` client slots of `client_stride` bytes: a 64-byte
//! slot header (`state: u32`, `request_len: u32`, `reply_len: u32`, `client_waiting: u32`,
//! padding), the request (`max_message` bytes rounded up to 8) and the reply (`max_reply`
//! rounded up to 8). In each phase only one side touches an area, so requests and replies
//! are plain copies through raw pointers (as a `View`'s are); a peer that breaks the
//! protocol can only make the other read wrong bytes, whose length is checked.
//!
//! # The slot's state word
//!
//! `state = generation << 2 | phase`, with the phases `IDLE`, `REQUEST` (written by the
//! client), `BUSY` (taken by the server) and `REPLY` (answered). A client owns its slot
//! (a role lock) and starts a new generation when it takes the slot over, so that the
//! server's answer to a dead client's request cannot reach the new one: the server moves a
//! slot from `BUSY` to `REPLY` with a compare-and-swap on the whole word.
//!
//! - client: write the request, store `REQUEST` (`Release`), increment `doorbell`, fence,
//!   wake the server if `server_waiting`; then wait for `REPLY` on its own state word.
//! - server: read `doorbell`, scan the slots for `REQUEST`, take one with a CAS to `BUSY`
//!   (`Acquire`: the request's words happen before), read it, write the reply, CAS to
//!   `REPLY` (`Release`), fence, wake the client if `client_waiting`. With nothing to take,
//!   it sleeps on `doorbell` while it still reads what it read before the scan.
//! - A new server puts every `BUSY` slot back to `REQUEST`: the requests that a dead
//!   server took are answered again (at least once).
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]
#![allow(unsafe_code)]

use std::time::Instant;

use crate::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use crate::channel::algo::{park_on, ControlPage, Geometry, Header};
use crate::channel::mem::Shared;
use crate::sync::algo::Parker;

pub(crate) const IDLE: u32 = 0;
pub(crate) const REQUEST: u32 = 1;
pub(crate) const BUSY: u32 = 2;
pub(crate) const REPLY: u32 = 3;

/// The control page of a request/reply channel: the header, then the server's line.
#[cfg_attr(loom, derive(Default))]
#[repr(C, align(128))]
pub(crate) struct RpcControl {
    pub(crate) header: Header,
    /// Incremented with every request: the server's futex word.
    pub(crate) doorbell: AtomicU32,
    /// The server's state word (`algo::CONNECTED`, `algo::CLOSED`).
    pub(crate) server: AtomicU32,
    pub(crate) server_pid: AtomicU32,
    /// Non-zero while the server may sleep on `doorbell`.
    pub(crate) server_waiting: AtomicU32,
    _line1: [AtomicU64; 14],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RpcControl>() == 256);

// SAFETY: repr(C), atomics only, 256 bytes, starts with the header.
unsafe impl ControlPage for RpcControl {}

impl std::fmt::Debug for RpcControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcControl")
            .field("doorbell", &self.doorbell.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// Shared state that no correct peer leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// A channel's client slots.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clients<'a> {
    pub(crate) ctl: &'a RpcControl,
    mem: Shared,
    stride: usize,
    pub(crate) count: u32,
    pub(crate) max_request: u32,
    pub(crate) max_reply: u32,
}

impl<'a> Clients<'a> {
    /// # Safety
    ///
    /// `base` points at `g.capacity * g.client_stride()` bytes, 8-aligned, that stay
    /// mapped (readable and writable) for `'a` and are only accessed through atomics and
    /// raw copies (`Shared::new`'s promise).
    pub(crate) unsafe fn new(ctl: &'a RpcControl, base: *mut u8, g: Geometry) -> Clients<'a> {
        Clients {
            ctl,
            // SAFETY: the caller's promise.
            mem: unsafe { Shared::new(base) },
            stride: g.client_stride() as usize,
            count: g.capacity,
            max_request: g.max_message,
            max_reply: g.max_reply,
        }
    }

    /// The offset of byte `off` of slot `slot` in the area.
    fn at(&self, slot: u32, off: usize) -> usize {
        assert!(slot < self.count && off + 8 <= self.stride);
        slot as usize * self.stride + off
    }

    fn word32(&self, slot: u32, i: usize) -> &'a AtomicU32 {
        // SAFETY: 4-aligned inside the slot header (`at` checks the slot), which stays
        // mapped for 'a (`new`'s promise).
        unsafe { self.mem.u32_at(self.at(slot, 4 * i)) }
    }

    /// The slot's state word: the client's futex word too.
    pub(crate) fn state(&self, slot: u32) -> &'a AtomicU32 {
        self.word32(slot, 0)
    }

    fn request_len(&self, slot: u32) -> &'a AtomicU32 {
        self.word32(slot, 1)
    }

    fn reply_len(&self, slot: u32) -> &'a AtomicU32 {
        self.word32(slot, 2)
    }

    pub(crate) fn client_waiting(&self, slot: u32) -> &'a AtomicU32 {
        self.word32(slot, 3)
    }

    /// The offset of the request or reply area of `slot`: 8-aligned, `max_request` (or
    /// `max_reply`) rounded up to 8 bytes long.
    fn data(&self, slot: u32, reply: bool) -> usize {
        let start = 64
            + if reply {
                crate::channel::algo::round8(self.max_request) as usize
            } else {
                0
            };
        self.at(slot, start)
    }

    fn put(&self, slot: u32, reply: bool, data: &[u8]) {
        let max = if reply {
            self.max_reply
        } else {
            self.max_request
        };
        assert!(data.len() <= max as usize);
        // SAFETY: the area holds `max` bytes rounded up to 8 inside the mapping; in the
        // protocol only one side touches an area in each phase (see the module
        // documentation), and the copy goes through raw pointers, as a `View`'s does.
        unsafe { self.mem.copy_in(self.data(slot, reply), data) };
    }

    /// The largest request, or reply.
    fn max(&self, reply: bool) -> u32 {
        if reply {
            self.max_reply
        } else {
            self.max_request
        }
    }

    /// Copies the request or reply of `slot` into `dst`, which is as long as it.
    fn get_into(&self, slot: u32, reply: bool, dst: &mut [u8]) {
        assert!(dst.len() <= self.max(reply) as usize);
        // SAFETY: as in `put`.
        unsafe { self.mem.copy_out(self.data(slot, reply), dst) };
    }

    fn get(&self, slot: u32, reply: bool, len: usize, buf: &mut Vec<u8>) {
        assert!(len <= self.max(reply) as usize);
        // Into the vector's spare room, not zeroed first (a 64 KiB request paid a 64 KiB
        // `memset` before its copy).
        buf.clear();
        buf.reserve(len);
        // SAFETY: as in `put`; `buf` has room for `len` bytes (reserved above).
        unsafe {
            self.mem
                .copy_out_uninit(self.data(slot, reply), &mut buf.spare_capacity_mut()[..len])
        };
        // SAFETY: the copy initialized the first `len` bytes of the spare room.
        unsafe { buf.set_len(len) };
    }
}

/// Where a request or reply is copied out of its slot.
pub(crate) trait Dest {
    /// Copies the request or reply of `slot`, of `len` bytes (at most the largest, checked
    /// by the caller), or of it what it wants.
    fn fill(&mut self, c: &Clients<'_>, slot: u32, reply: bool, len: usize);
}

/// A vector, made to hold it.
impl Dest for Vec<u8> {
    fn fill(&mut self, c: &Clients<'_>, slot: u32, reply: bool, len: usize) {
        c.get(slot, reply, len, self);
    }
}

/// The bytes of a value of one size (a typed call or receive): a request or reply of that
/// length is copied into `dst`; another length is not, and is kept in `got`.
pub(crate) struct Exact<'b> {
    dst: &'b mut [u8],
    pub(crate) got: Result<(), usize>,
}

impl<'b> Exact<'b> {
    pub(crate) fn new(dst: &'b mut [u8]) -> Exact<'b> {
        Exact { dst, got: Err(0) }
    }
}

impl Dest for Exact<'_> {
    fn fill(&mut self, c: &Clients<'_>, slot: u32, reply: bool, len: usize) {
        self.got = match len == self.dst.len() {
            true => {
                c.get_into(slot, reply, self.dst);
                Ok(())
            }
            false => Err(len),
        };
    }
}

/// A client's private half: its slot and generation.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) slot: u32,
    generation: u32,
}

fn word(generation: u32, phase: u32) -> u32 {
    (generation << 2) | phase
}

impl Client {
    /// The state word's value once the reply to this generation's request has come.
    pub(crate) fn reply_word(&self) -> u32 {
        word(self.generation, REPLY)
    }

    /// Takes over `slot` (which the caller's role lock gives it) with a new generation.
    pub(crate) fn attach(c: &Clients<'_>, slot: u32) -> Client {
        let generation = (c.state(slot).load(Acquire) >> 2).wrapping_add(1) & (u32::MAX >> 2);
        c.state(slot).store(word(generation, IDLE), Release);
        c.client_waiting(slot).store(0, Relaxed);
        Client { slot, generation }
    }

    /// Sends a request (at most `max_request` bytes, checked by the caller). A request
    /// still pending from before (one whose wait timed out) is given up: its reply, if
    /// it ever comes, is thrown away.
    pub(crate) fn send(&mut self, c: &Clients<'_>, request: &[u8], parker: &impl Parker) {
        let state = c.state(self.slot);
        if state.load(Relaxed) != word(self.generation, IDLE) {
            self.generation = self.generation.wrapping_add(1) & (u32::MAX >> 2);
            state.store(word(self.generation, IDLE), Release);
        }
        c.put(self.slot, false, request);
        c.request_len(self.slot)
            .store(request.len() as u32, Relaxed);
        // Release: the request happens before the server's Acquire CAS.
        state.store(word(self.generation, REQUEST), Release);
        c.ctl.doorbell.fetch_add(1, Release);
        // The fast side of the Dekker pair with the server's `park_on`.
        parker.fence_fast();
        if c.ctl.server_waiting.load(Relaxed) != 0 {
            // One server: one sleeper at most.
            parker.unpark(&c.ctl.doorbell, 1);
        }
    }

    /// The reply into `dest`, if it has come (`Ok(true)`).
    pub(crate) fn try_reply(
        &mut self,
        c: &Clients<'_>,
        dest: &mut impl Dest,
    ) -> Result<bool, Corrupt> {
        let state = c.state(self.slot);
        let s = state.load(Acquire);
        if s != word(self.generation, REPLY) {
            if s >> 2 != self.generation {
                // Our slot in another generation: someone else writes it.
                return Err(Corrupt);
            }
            return Ok(false);
        }
        let len = c.reply_len(self.slot).load(Relaxed);
        if len > c.max_reply {
            return Err(Corrupt);
        }
        dest.fill(c, self.slot, true, len as usize);
        state.store(word(self.generation, IDLE), Release);
        Ok(true)
    }

    /// Sleeps until the reply may have come, at most [`LIVENESS_PERIOD`](crate::channel::algo::LIVENESS_PERIOD); `false` if
    /// `deadline` passed.
    pub(crate) fn wait(
        &self,
        c: &Clients<'_>,
        parker: &impl Parker,
        deadline: Option<Instant>,
    ) -> bool {
        let state = c.state(self.slot);
        let seen = state.load(Relaxed);
        if seen == word(self.generation, REPLY) {
            return true;
        }
        park_on(c.client_waiting(self.slot), state, seen, parker, deadline)
    }
}

/// A request taken by the server: answer it with [`Server::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) slot: u32,
    generation: u32,
}

/// The server's private half: where its next scan starts.
#[derive(Debug)]
pub(crate) struct Server {
    next: u32,
}

impl Server {
    /// Takes over the server's side: requests that a dead server took are pending again.
    pub(crate) fn attach(c: &Clients<'_>) -> Server {
        for slot in 0..c.count {
            let s = c.state(slot).load(Acquire);
            if s & 3 == BUSY {
                let _ = c
                    .state(slot)
                    .compare_exchange(s, (s & !3) | REQUEST, AcqRel, Relaxed);
            }
        }
        Server { next: 0 }
    }

    /// The doorbell's count, to read before a scan and wait on after it.
    pub(crate) fn doorbell(&self, c: &Clients<'_>) -> u32 {
        c.ctl.doorbell.load(Acquire)
    }

    /// Takes a pending request into `dest`, if there is one.
    pub(crate) fn try_take(
        &mut self,
        c: &Clients<'_>,
        dest: &mut impl Dest,
    ) -> Result<Option<Taken>, Corrupt> {
        for k in 0..c.count {
            let slot = (self.next + k) % c.count;
            let state = c.state(slot);
            let s = state.load(Relaxed);
            if s & 3 != REQUEST {
                continue;
            }
            // Acquire: the client's request happens before our reads of it.
            if state
                .compare_exchange(s, (s & !3) | BUSY, Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            let len = c.request_len(slot).load(Relaxed);
            if len > c.max_request {
                return Err(Corrupt);
            }
            dest.fill(c, slot, false, len as usize);
            self.next = (slot + 1) % c.count;
            return Ok(Some(Taken {
                slot,
                generation: s >> 2,
            }));
        }
        Ok(None)
    }

    /// Answers `t` with `reply` (at most `max_reply` bytes, checked by the caller).
    /// `false`: the client is gone (or gave up), and the reply is thrown away. It touches no
    /// state of the server's own (the ticket says where the answer goes: a slot that only
    /// its taker may move from BUSY), so answers may come from any thread while the server
    /// takes further requests.
    pub(crate) fn reply(c: &Clients<'_>, t: Taken, reply: &[u8], parker: &impl Parker) -> bool {
        let state = c.state(t.slot);
        if state.load(Relaxed) != word(t.generation, BUSY) {
            return false;
        }
        c.put(t.slot, true, reply);
        c.reply_len(t.slot).store(reply.len() as u32, Relaxed);
        // Release: the reply happens before the client's Acquire load of REPLY.
        if state
            .compare_exchange(
                word(t.generation, BUSY),
                word(t.generation, REPLY),
                Release,
                Relaxed,
            )
            .is_err()
        {
            return false;
        }
        parker.fence_fast();
        if c.client_waiting(t.slot).load(Relaxed) != 0 {
            // One client per slot.
            parker.unpark(state, 1);
        }
        true
    }

    /// Sleeps until a request may have come after the doorbell read `seen`, at most
    /// [`LIVENESS_PERIOD`](crate::channel::algo::LIVENESS_PERIOD); `false` if `deadline` passed.
    pub(crate) fn wait(
        &self,
        c: &Clients<'_>,
        seen: u32,
        parker: &impl Parker,
        deadline: Option<Instant>,
    ) -> bool {
        park_on(
            &c.ctl.server_waiting,
            &c.ctl.doorbell,
            seen,
            parker,
            deadline,
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::algo::KIND_REQUEST_REPLY;
    use super::*;

    use std::sync::Arc;

    use crate::sync::algo::test_parker::Yield;

    struct Heap {
        ctl: Box<RpcControl>,
        area: Vec<u64>,
        g: Geometry,
    }

    // SAFETY: the memory is only accessed through atomics.
    unsafe impl Sync for Heap {}
    // SAFETY: as above.
    unsafe impl Send for Heap {}

    impl Heap {
        fn new(clients: u32) -> Arc<Heap> {
            let g = Geometry::untyped(KIND_REQUEST_REPLY, clients, 32, 40);
            g.check().unwrap();
            // SAFETY: RpcControl is atomics only, for which zero bytes are valid.
            let ctl: Box<RpcControl> = unsafe { Box::new(std::mem::zeroed()) };
            g.init(&ctl.header);
            Arc::new(Heap {
                ctl,
                area: vec![0; g.area_len() as usize / 8],
                g,
            })
        }

        fn clients(&self) -> Clients<'_> {
            // SAFETY: the Vec holds area_len bytes, 8-aligned, for as long as self.
            unsafe { Clients::new(&self.ctl, self.area.as_ptr() as *mut u8, self.g) }
        }
    }

    #[test]
    fn every_client_gets_its_own_replies() {
        let _w = crate::testing::watchdog(120);
        let calls = if cfg!(miri) { 20 } else { 5_000 };
        let heap = Heap::new(3);
        let clients: Vec<_> = (0..3u32)
            .map(|slot| {
                let h = heap.clone();
                std::thread::spawn(move || {
                    let c = h.clients();
                    let mut me = Client::attach(&c, slot);
                    let mut buf = Vec::new();
                    for i in 0..calls {
                        let req = format!("{slot}:{i}");
                        me.send(&c, req.as_bytes(), &Yield);
                        while !me.try_reply(&c, &mut buf).unwrap() {
                            me.wait(&c, &Yield, None);
                        }
                        assert_eq!(buf, format!("re {req}").as_bytes());
                    }
                })
            })
            .collect();
        let c = heap.clients();
        let mut server = Server::attach(&c);
        let mut buf = Vec::new();
        let mut answered = 0;
        while answered < 3 * calls {
            let seen = server.doorbell(&c);
            match server.try_take(&c, &mut buf).unwrap() {
                Some(t) => {
                    let reply = [b"re ".as_slice(), &buf].concat();
                    assert!(Server::reply(&c, t, &reply, &Yield));
                    answered += 1;
                }
                None => {
                    server.wait(&c, seen, &Yield, None);
                }
            }
        }
        for t in clients {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_dead_clients_reply_never_reaches_the_next_and_a_dead_servers_work_is_redone() {
        let heap = Heap::new(1);
        let c = heap.clients();
        let mut old = Client::attach(&c, 0);
        old.send(&c, b"old", &Yield);
        let mut server = Server::attach(&c);
        let mut buf = Vec::new();
        let t = server.try_take(&c, &mut buf).unwrap().unwrap();
        assert_eq!(buf, b"old");
        // The client dies; a new one takes its slot and asks something else.
        let mut new = Client::attach(&c, 0);
        assert!(!Server::reply(&c, t, b"for old", &Yield), "thrown away");
        new.send(&c, b"new", &Yield);
        // The server dies holding it; the next one answers it again.
        let t = server.try_take(&c, &mut buf).unwrap().unwrap();
        assert_eq!(buf, b"new");
        let _ = t;
        let mut server = Server::attach(&c);
        let t = server.try_take(&c, &mut buf).unwrap().unwrap();
        assert_eq!(buf, b"new");
        assert!(Server::reply(&c, t, b"for new", &Yield));
        assert!(new.try_reply(&c, &mut buf).unwrap());
        assert_eq!(buf, b"for new");
        // Nonsense lengths are errors.
        new.send(&c, b"x", &Yield);
        c.request_len(0).store(1000, Relaxed);
        assert_eq!(server.try_take(&c, &mut buf), Err(Corrupt));
    }
}
