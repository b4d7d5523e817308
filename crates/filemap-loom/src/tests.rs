//! The model checks. Each runs every interleaving of its threads (up to
//! [`PREEMPTIONS`] preemptions) and checks its assertions in each; the ring's bytes are
//! loom cells, so a frame read that is not ordered after its write, or a write over a frame
//! not yet read, fails the check too.

use std::time::Instant;

use loom::sync::Arc;
use loom::thread;

use crate::atomic::{AtomicU32, Ordering::SeqCst};
use crate::channel::algo::{
    Consumer, Control, Frame, Geometry, Producer, Ring, KIND_LATEST, KIND_STREAM,
};
use crate::channel::algo::{KIND_BROADCAST, KIND_REQUEST_REPLY};
use crate::channel::mem::LoomMem;
use crate::channel::rpc::{Client, Clients, RpcControl, Server};
use crate::channel::seqlock::{read_latest, Publisher, SlotControl, Slots, Subscriber, Writer};
use crate::sync::algo::{Parked, Parker, Words};

/// Enough to find the reorderings these algorithms could suffer (each needs one or two
/// preemptions at the wrong place), small enough to finish in seconds.
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(PREEMPTIONS);
    b.check(f);
}

/// Parking is a yield: the checks are about the data path and its orderings.
struct Yield;

impl Parker for Yield {
    fn park(&self, word: &AtomicU32, expected: u32, _: Option<Instant>) -> Parked {
        if word.load(SeqCst) == expected {
            thread::yield_now();
        }
        Parked::Woken
    }
    fn park_any(&self, words: &Words<'_>, deadline: Option<Instant>) -> Parked {
        match words.first() {
            Some((word, val)) => self.park(word, val, deadline),
            None => Parked::Woken,
        }
    }
    fn unpark(&self, _: &AtomicU32, _: u32) {}
}

fn geometry(kind: u32, capacity: u32, max_message: u32) -> Geometry {
    let g = Geometry::untyped(kind, capacity, max_message, 0);
    g.check().unwrap();
    g
}

struct Stream {
    ctl: Control,
    mem: LoomMem,
    g: Geometry,
}

// SAFETY: the ring's cells are only touched through the algorithms, which loom checks.
unsafe impl Sync for Stream {}
// SAFETY: as above.
unsafe impl Send for Stream {}

impl Stream {
    fn new(capacity: u32, max_message: u32) -> Arc<Stream> {
        let g = geometry(KIND_STREAM, capacity, max_message);
        let ctl = Control::default();
        g.init(&ctl.header);
        Arc::new(Stream {
            ctl,
            mem: LoomMem::new(capacity as usize),
            g,
        })
    }

    fn ring(&self) -> Ring<'_> {
        // SAFETY: the memory lives as long as `self`.
        unsafe { Ring::new(&self.ctl, self.mem.base(), self.g) }
    }
}

fn send(p: &mut Producer, ring: &Ring<'_>, msg: &[u8]) {
    loop {
        if let Some(r) = p.try_reserve(ring, msg.len() as u32, &Yield).unwrap() {
            assert!(ring.write(r.offset, msg));
            p.commit(ring, r);
            p.publish(ring, &Yield);
            return;
        }
        thread::yield_now();
    }
}

fn recv(c: &mut Consumer, ring: &Ring<'_>) -> Vec<u8> {
    loop {
        if let Some(f) = c.try_peek(ring).unwrap() {
            let mut v = Vec::new();
            ring.append_to(f.offset, f.len as usize, &mut v);
            let _ = c.consume(f);
            c.release_after(f.len, ring, &Yield);
            return v;
        }
        thread::yield_now();
    }
}

/// Three messages through a 64-byte ring: the second leaves 8 bytes at the end, so the
/// third needs a skip frame and goes to offset 0, over the first, once that is read. The
/// producer is `produce`; the consumer receives one message at a time.
fn three_messages(produce: fn(&mut Producer, &Ring<'_>, &[Vec<u8>])) {
    model(move || {
        let s = Stream::new(64, 32);
        let msgs: [Vec<u8>; 3] = [vec![1; 20], vec![2; 12], vec![3; 20]];
        let s2 = s.clone();
        let m2 = msgs.clone();
        let producer = thread::spawn(move || {
            let ring = s2.ring();
            let mut p = Producer::attach(&ring).unwrap();
            produce(&mut p, &ring, &m2);
        });
        let ring = s.ring();
        let mut c = Consumer::attach(&ring).unwrap();
        for m in &msgs {
            assert_eq!(&recv(&mut c, &ring), m);
        }
        producer.join().unwrap();
    });
}

#[test]
fn stream_messages_arrive_whole_in_order_and_are_written_over_only_once_read() {
    three_messages(|p, ring, msgs| {
        for m in msgs {
            send(p, ring, m);
        }
    });
}

/// Three 16-byte messages through a 64-byte ring (the third needs a skip frame), taken
/// in batches: `take` takes what it can, and the room goes back after each batch.
fn three_in_batches(take: fn(&mut Consumer, &Ring<'_>, &mut Vec<Vec<u8>>)) {
    model(move || {
        let s = Stream::new(64, 24);
        let s2 = s.clone();
        let producer = thread::spawn(move || {
            let ring = s2.ring();
            let mut p = Producer::attach(&ring).unwrap();
            for i in 0..3u8 {
                send(&mut p, &ring, &[i; 16]);
            }
        });
        let ring = s.ring();
        let mut c = Consumer::attach(&ring).unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            take(&mut c, &ring, &mut got);
            c.release(&ring, &Yield);
            thread::yield_now();
        }
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v, &vec![i as u8; 16]);
        }
        producer.join().unwrap();
    });
}

/// The frame at `f`, consumed.
fn take_frame(c: &mut Consumer, ring: &Ring<'_>, f: Frame, got: &mut Vec<Vec<u8>>) {
    let mut v = Vec::new();
    ring.append_to(f.offset, f.len as usize, &mut v);
    let _ = c.consume(f);
    got.push(v);
}

/// A consumer that gives room back in a batch (two frames at once), as dropped messages
/// do.
#[test]
fn stream_room_given_back_in_a_batch() {
    three_in_batches(|c, ring, got| {
        while let Some(f) = c.try_peek(ring).unwrap() {
            take_frame(c, ring, f, got);
        }
    });
}

/// The same, with messages written the way `send_all` writes them: `fill_ready` while they
/// fit before `limit`, `try_reserve` (which looks at `head`) for the one where it stops,
/// one publish per run.
#[test]
fn stream_runs_filled_in() {
    three_messages(|p, ring, msgs| {
        let mut it = msgs.iter().map(|m| &m[..]);
        loop {
            let (_, rest) = p.fill_ready(ring, &mut it);
            p.publish(ring, &Yield);
            match rest {
                Some(m) => send(p, ring, m),
                None => break,
            }
        }
    });
}

/// A batch taken the way `recv_batch` takes it: the frames `take_ready` vouches for, then
/// `try_peek` (which looks at `tail`) where it stops. The third message needs a skip
/// frame, which only `try_peek` passes over.
#[test]
fn stream_batches_of_ready_frames() {
    three_in_batches(|c, ring, got| loop {
        let ready = c.take_ready(ring, 8, |f| {
            let mut v = Vec::new();
            ring.append_to(f.offset, f.len as usize, &mut v);
            got.push(v);
        });
        if ready > 0 {
            continue;
        }
        match c.try_peek(ring).unwrap() {
            Some(f) => take_frame(c, ring, f, got),
            None => break,
        }
    });
}

struct SlotChannel {
    ctl: SlotControl,
    mem: LoomMem,
    g: Geometry,
}

impl SlotChannel {
    fn new(kind: u32, capacity: u32, max_message: u32) -> Arc<SlotChannel> {
        let g = geometry(kind, capacity, max_message);
        let ctl = SlotControl::default();
        g.init(&ctl.header);
        Arc::new(SlotChannel {
            ctl,
            mem: LoomMem::new(g.area_len() as usize),
            g,
        })
    }

    fn slots(&self) -> Slots<'_> {
        // SAFETY: the memory lives as long as `self`.
        unsafe { Slots::new(&self.ctl, self.mem.base(), self.g) }
    }
}

/// Value `v` is 16 bytes of `v`: a torn copy mixes two values.
fn value(v: u8) -> Vec<u8> {
    vec![v; 16]
}

/// A latest-value reader racing a writer of three values never accepts a torn copy, and
/// the versions it sees never go back.
#[test]
fn latest_values_are_never_torn_and_never_go_back() {
    model(|| {
        let c = SlotChannel::new(KIND_LATEST, 2, 16);
        let c2 = c.clone();
        let writer = thread::spawn(move || {
            let s = c2.slots();
            let mut w = Writer::attach(&s);
            for v in 1..=3u8 {
                w.publish(&s, &value(v), &Yield);
            }
        });
        let s = c.slots();
        let mut buf = Vec::new();
        let mut last = 0;
        for _ in 0..2 {
            if let Some(v) = read_latest(&s, &mut buf).unwrap() {
                assert!(v >= last, "version {v} after {last}");
                assert_eq!(buf, value(v as u8), "version {v} read torn");
                last = v;
            }
        }
        writer.join().unwrap();
    });
}

/// A broadcast subscriber racing a publisher that laps it (two slots, three messages)
/// gets whole messages in order, and counts what it lost.
#[test]
fn broadcast_subscribers_get_whole_messages_or_a_count_of_the_lost() {
    model(|| {
        let c = SlotChannel::new(KIND_BROADCAST, 2, 16);
        let c2 = c.clone();
        let s = c.slots();
        let mut sub = Subscriber::attach(&s);
        let publisher = thread::spawn(move || {
            let s = c2.slots();
            let mut p = Publisher::attach(&s);
            for n in 0..3u8 {
                p.publish(&s, &value(n), &Yield);
            }
        });
        let mut buf = Vec::new();
        let mut next = 0u64;
        for _ in 0..3 {
            if let Some(lost) = sub.try_recv(&s, &mut buf).unwrap() {
                next += lost;
                assert_eq!(buf, value(next as u8), "message {next} read torn");
                next += 1;
            }
            thread::yield_now();
        }
        assert!(next <= 3);
        publisher.join().unwrap();
    });
}

struct RpcChannel {
    ctl: RpcControl,
    mem: LoomMem,
    g: Geometry,
}

// SAFETY: the slots' cells are only touched through the algorithms, which loom checks.
unsafe impl Sync for RpcChannel {}
// SAFETY: as above.
unsafe impl Send for RpcChannel {}

impl RpcChannel {
    fn new(clients: u32) -> Arc<RpcChannel> {
        let g = Geometry::untyped(KIND_REQUEST_REPLY, clients, 16, 16);
        g.check().unwrap();
        let ctl = RpcControl::default();
        g.init(&ctl.header);
        Arc::new(RpcChannel {
            ctl,
            mem: LoomMem::new(g.area_len() as usize),
            g,
        })
    }

    fn clients(&self) -> Clients<'_> {
        // SAFETY: the memory lives as long as `self`.
        unsafe { Clients::new(&self.ctl, self.mem.base(), self.g) }
    }
}

/// The request for call `i` of client `slot`, and its answer (the bytes reversed).
fn request(slot: u32, i: u8) -> Vec<u8> {
    vec![slot as u8, i, 7, 9]
}

fn answer(request: &[u8]) -> Vec<u8> {
    request.iter().rev().copied().collect()
}

/// Client `slot` makes `calls` calls, each waiting for its reply (as `RpcClient::call`
/// does), and checks every reply.
fn calls(c: &Clients<'_>, slot: u32, calls: u8) {
    let mut client = Client::attach(c, slot);
    let mut reply = Vec::new();
    for i in 0..calls {
        client.send(c, &request(slot, i), &Yield);
        while !client.try_reply(c, &mut reply).unwrap() {
            client.wait(c, &Yield, None);
        }
        assert_eq!(reply, answer(&request(slot, i)), "client {slot}, call {i}");
    }
}

/// A server that answers `n` requests, as `RpcServer::recv` and `reply` do.
fn serve(c: &Clients<'_>, n: usize) {
    let mut server = Server::attach(c);
    let mut req = Vec::new();
    for _ in 0..n {
        loop {
            let seen = server.doorbell(c);
            if let Some(t) = server.try_take(c, &mut req).unwrap() {
                assert!(Server::reply(c, t, &answer(&req), &Yield));
                break;
            }
            server.wait(c, seen, &Yield, None);
        }
    }
}

/// One client calls twice (the slot goes round its phases twice); the server reads each
/// request only once it is whole, and the client each reply.
#[test]
fn request_reply_round_trips_are_whole_and_in_order() {
    model(|| {
        let ch = RpcChannel::new(1);
        let ch2 = ch.clone();
        let server = thread::spawn(move || serve(&ch2.clients(), 2));
        calls(&ch.clients(), 0, 2);
        server.join().unwrap();
    });
}

/// Two clients' requests wait at once (sent from one thread, as two processes would send
/// them): the server takes both, and each client gets the answer to its own.
#[test]
fn request_reply_clients_get_their_own_answers() {
    model(|| {
        let ch = RpcChannel::new(2);
        let ch2 = ch.clone();
        let server = thread::spawn(move || serve(&ch2.clients(), 2));
        let c = ch.clients();
        let mut clients = [Client::attach(&c, 0), Client::attach(&c, 1)];
        for (slot, client) in clients.iter_mut().enumerate() {
            client.send(&c, &request(slot as u32, 0), &Yield);
        }
        let mut reply = Vec::new();
        for (slot, client) in clients.iter_mut().enumerate().rev() {
            while !client.try_reply(&c, &mut reply).unwrap() {
                client.wait(&c, &Yield, None);
            }
            assert_eq!(reply, answer(&request(slot as u32, 0)), "client {slot}");
        }
        server.join().unwrap();
    });
}
