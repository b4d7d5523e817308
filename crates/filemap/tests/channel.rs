//! Stream channels between processes: integrity over millions of messages, producers and
//! consumers killed mid-stream, roles, kinds and bad input. Children are this test binary,
//! re-run in a role (see `child`).
// Linux and Windows (under Wine in CI); Linux-only parts are marked.
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use common::garbage;
use common::{
    kill_hard, opts, read_line_within, report, role, spawn_role, watchdog, Reap, TestRoot,
};
use filemap::{Error, Kind, Peer, Stream, TrySendError};

const LINE: Duration = Duration::from_secs(30);
const ENTRY: &str = "child";

/// Message `i`: 8 bytes of `i`, then up to 200 bytes that depend on `i`.
fn message(i: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&i.to_le_bytes());
    let extra = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % 201;
    out.extend((0..extra).map(|j| (i as usize * 31 + j) as u8));
}

/// Checks that `got` is a whole message, and returns its number.
fn check(got: &[u8]) -> u64 {
    assert!(got.len() >= 8, "a message of {} bytes", got.len());
    let i = u64::from_le_bytes(got[..8].try_into().unwrap());
    let mut want = Vec::new();
    message(i, &mut want);
    assert_eq!(got, &want[..], "message {i} is torn or wrong");
    i
}

#[test]
fn child() {
    let Some((role, args)) = role() else { return };
    let name = &args[0];
    match role.as_str() {
        // Send messages `from..to` (to = u64::MAX: until killed), then close.
        "produce" => {
            let from: u64 = args[1].parse().unwrap();
            let to: u64 = args[2].parse().unwrap();
            let s = opts().open_stream(name).unwrap();
            let mut tx = s.sender().unwrap();
            report("ready");
            let mut buf = Vec::new();
            for i in from..to {
                message(i, &mut buf);
                tx.send(&buf).unwrap();
            }
            report("done");
        }
        // The same with `send_all`, in batches of 1 to 97 messages.
        "produce-batches" => {
            let from: u64 = args[1].parse().unwrap();
            let to: u64 = args[2].parse().unwrap();
            let s = opts().open_stream(name).unwrap();
            let mut tx = s.sender().unwrap();
            report("ready");
            let mut i = from;
            let mut bufs: Vec<Vec<u8>> = Vec::new();
            while i < to {
                let k = (1 + i % 97).min(to - i);
                bufs.resize_with(k as usize, Vec::new);
                for (j, b) in bufs.iter_mut().enumerate() {
                    message(i + j as u64, b);
                }
                let sent = tx.send_all(bufs.iter().map(|b| &b[..])).unwrap();
                assert_eq!(sent as u64, k);
                i += k;
            }
            report("done");
        }
        // Receive and check messages until killed or the producer closes; report each
        // thousandth.
        "consume" => {
            let s = opts().open_stream(name).unwrap();
            let mut rx = s.receiver().unwrap();
            report("ready");
            let mut n = 0u64;
            let mut buf = Vec::new();
            loop {
                match rx.recv() {
                    Ok(m) => {
                        buf.clear();
                        m.append_to(&mut buf);
                    }
                    Err(Error::Disconnected { .. }) => break,
                    Err(e) => panic!("{e}"),
                }
                check(&buf);
                n += 1;
                if n % 1000 == 0 {
                    report(n);
                }
            }
            report("eof");
        }
        // Receive and check `n` messages, report the last one's number, and wait to be
        // killed.
        "take" => {
            let n: u64 = args[1].parse().unwrap();
            let s = opts().open_stream(name).unwrap();
            let mut rx = s.receiver().unwrap();
            let mut buf = Vec::new();
            let mut last = 0;
            for _ in 0..n {
                buf.clear();
                rx.recv().unwrap().append_to(&mut buf);
                last = check(&buf);
            }
            report(last);
            std::thread::sleep(Duration::from_secs(3600));
        }
        // The same, inside one `recv_batch` of up to 1000 messages.
        "take-batch" => {
            let n: u64 = args[1].parse().unwrap();
            let s = opts().open_stream(name).unwrap();
            let mut rx = s.receiver().unwrap();
            let mut took = 0;
            loop {
                rx.recv_batch(1000, |m| {
                    took += 1;
                    if took == n {
                        report(check(&m.to_vec()));
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                })
                .unwrap();
            }
        }
        // Subscribe to broadcast `name`, read (sleeping `delay` µs per message) until the
        // publisher closes; check every message; report what was seen and lost.
        // Subscribe (read-only with a third argument "ro"), read until the publisher
        // closes, checking every message and the lost counts; report "seen lost".
        "subscribe" => {
            let delay = Duration::from_micros(args[1].parse().unwrap());
            let b = match args.get(2).map(String::as_str) {
                Some("ro") => opts().open_broadcast_read_only(name).unwrap(),
                _ => opts().open_broadcast(name).unwrap(),
            };
            let mut sub = b.subscriber().unwrap();
            report("ready");
            let (mut seen, mut lost, mut last) = (0u64, 0u64, None::<u64>);
            let mut buf = Vec::new();
            loop {
                match sub.recv(&mut buf) {
                    Ok(l) => {
                        let i = check(&buf);
                        if let Some(prev) = last {
                            assert_eq!(i, prev + 1 + l, "lost count");
                        }
                        last = Some(i);
                        seen += 1;
                        lost += l;
                        std::thread::sleep(delay);
                    }
                    Err(Error::Disconnected { died: false, .. }) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            report(format!("{seen} {lost}"));
        }
        // Write ever newer values to latest-value channel `name` until killed.
        "write-latest" => {
            let l = opts().open_latest(name).unwrap();
            let mut w = l.writer().unwrap();
            report("ready");
            let mut buf = Vec::new();
            for v in 1.. {
                message(v, &mut buf);
                w.publish(&buf).unwrap();
            }
        }
        // Make `calls` calls on request/reply channel `name`, checking each reply.
        "call" => {
            let calls: u64 = args[1].parse().unwrap();
            let rr = opts().open_request_reply(name).unwrap();
            let mut c = rr.client().unwrap();
            report("ready");
            let (mut req, mut reply) = (Vec::new(), Vec::new());
            for i in 0..calls {
                message(i * 1000 + u64::from(std::process::id() % 1000), &mut req);
                match c.call(&req, &mut reply, Some(LINE)) {
                    Ok(()) => {
                        let mut want = req.clone();
                        want.reverse();
                        assert_eq!(reply, want, "reply {i}");
                    }
                    Err(Error::Disconnected { died, .. }) => {
                        report(format!("disconnected {died}"));
                        return;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            report("done");
        }
        // Be the producer of stream `name`, send nothing, until killed (or stdin closes).
        "hold" => {
            let s = opts().open_stream(name).unwrap();
            let _tx = s.sender().unwrap();
            report("ready");
            common::wait_for_stdin_eof();
        }
        // Publish messages `0..count` on broadcast `name`; then, with "hold", keep the
        // publisher's role until killed (or stdin closes), else close.
        "publish" => {
            let count: u64 = args[1].parse().unwrap();
            let b = opts().open_broadcast(name).unwrap();
            let mut p = b.publisher().unwrap();
            report("ready");
            let mut buf = Vec::new();
            for i in 0..count {
                message(i, &mut buf);
                p.send(&buf).unwrap();
            }
            report("done");
            if args.get(2).is_some_and(|a| a == "hold") {
                common::wait_for_stdin_eof();
            }
        }
        // Play the far end of a channel of kind args[1] (see `End`), and make every call
        // of it once per line "go" on stdin, reporting "ok"; take the end again at a line
        // "reopen" (see `End::reopen`); at the end of stdin, report "bye" and the number of
        // calls that said `Corrupt`.
        "scribbled" => {
            let mut end = Some(End::open(&args[1], name, &opts(), false).unwrap());
            let quit = opts()
                .create_event(&format!("Local\\quit-{}", std::process::id()), true, false)
                .unwrap();
            report("ready");
            let mut line = String::new();
            let (mut round, mut corrupt) = (0, 0);
            while std::io::stdin().read_line(&mut line).unwrap() > 0 {
                if line.trim() == "reopen" {
                    report(End::reopen(&mut end, &args[1], name, &opts(), false));
                } else {
                    corrupt += end.as_mut().map_or(0, |e| e.poke(round, &quit));
                    round += 1;
                    report("ok");
                }
                line.clear();
            }
            report(format!("bye {corrupt}"));
        }
        other => panic!("unknown role {other}"),
    }
}

fn recv_vec(rx: &mut filemap::Receiver, timeout: Duration) -> filemap::Result<Vec<u8>> {
    rx.recv_timeout(timeout).map(|m| m.to_vec())
}

#[test]
fn two_million_messages_arrive_whole_and_in_order() {
    let _w = watchdog(300);
    let root = TestRoot::new("ch-order");
    let name = root.name("Local\\order");
    let s = root.opts().create_stream(&name, 1 << 16, 512).unwrap();
    let mut rx = s.receiver().unwrap();
    // Wine's process and memory emulation is slower: fewer there.
    let n: u64 = if cfg!(windows) { 200_000 } else { 2_000_000 };
    let mut kid = Reap(spawn_role(
        ENTRY,
        "produce",
        &root.path,
        &[&name, "0", &n.to_string()],
    ));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    let mut sum = 0u64;
    let mut expect = Vec::new();
    for i in 0..n {
        let m = rx.recv_timeout(LINE).unwrap();
        let mut got = vec![0; m.len()];
        m.read_at(0, &mut got).unwrap();
        drop(m);
        message(i, &mut expect);
        assert_eq!(got, expect, "message {i}");
        sum = sum.wrapping_add(got.iter().map(|&b| u64::from(b)).sum::<u64>());
    }
    assert!(sum > 0);
    assert_eq!(read_line_within(&mut kid.0, LINE), "done");
    // The producer closed cleanly: the end of the stream, not a crash.
    match rx.recv_timeout(LINE) {
        Err(Error::Disconnected {
            peer: "producer",
            died: false,
            ..
        }) => {}
        other => panic!("expected a clean disconnect, got {other:?}"),
    }
    assert_eq!(s.queued(), 0);
    kid.0.wait().unwrap();
}

/// Batches both ways between two processes (`send_all` of 1 to 97 messages, `recv_batch`
/// of up to 1 to 300), through a ring small enough to wrap every few hundred messages.
#[test]
fn batches_arrive_whole_and_in_order_between_processes() {
    let _w = watchdog(300);
    let root = TestRoot::new("ch-batches");
    let name = root.name("Local\\batches");
    let s = root.opts().create_stream(&name, 1 << 15, 512).unwrap();
    let mut rx = s.receiver().unwrap();
    let n: u64 = if cfg!(windows) { 100_000 } else { 1_000_000 };
    let mut kid = Reap(spawn_role(
        ENTRY,
        "produce-batches",
        &root.path,
        &[&name, "0", &n.to_string()],
    ));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    let (mut next, mut batches, mut largest) = (0u64, 0u64, 0usize);
    let mut got = Vec::new();
    while next < n {
        let max = 1 + (batches % 300) as usize;
        let k = rx
            .recv_batch(max, |m| {
                got.clear();
                m.append_to(&mut got);
                assert_eq!(check(&got), next, "out of order");
                next += 1;
            })
            .unwrap();
        assert!(
            (1..=max).contains(&k),
            "{k} messages in a batch of up to {max}"
        );
        largest = largest.max(k);
        batches += 1;
    }
    assert!(largest > 1, "every batch held one message");
    assert_eq!(read_line_within(&mut kid.0, LINE), "done");
    match rx.recv_batch(10, |_| panic!("a message after the last")) {
        Err(Error::Disconnected { died: false, .. }) => {}
        other => panic!("expected a clean disconnect, got {other:?}"),
    }
    kid.0.wait().unwrap();
}

/// `send_all` stops at a message larger than the channel allows: those before it are sent,
/// the error states the limit, and nothing after it is sent.
#[test]
fn send_all_stops_at_a_message_too_large() {
    let root = TestRoot::new("ch-send-all");
    let name = root.name("Local\\send-all");
    let s = root.opts().create_stream(&name, 1 << 12, 100).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let big = [9u8; 101];
    let msgs: [&[u8]; 4] = [b"one", b"two", &big, b"four"];
    match tx.send_all(msgs) {
        Err(Error::MessageTooLarge {
            len: 101, max: 100, ..
        }) => {}
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    let mut buf = [0u8; 100];
    assert_eq!(rx.recv_into(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"one");
    assert_eq!(rx.recv_into(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");
    assert!(
        rx.try_recv().unwrap().is_none(),
        "nothing after the refused message"
    );
    // More than the ring holds at once: the sender waits for room while this side reads.
    let reader = std::thread::spawn(move || {
        let mut total = 0usize;
        let mut buf = [0u8; 100];
        for i in 0..1000u32 {
            let n = rx.recv_into(&mut buf).unwrap();
            assert_eq!(&buf[..n], i.to_le_bytes().repeat(1 + i as usize % 20));
            total += n;
        }
        total
    });
    let owned: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| i.to_le_bytes().repeat(1 + i as usize % 20))
        .collect();
    assert_eq!(tx.send_all(owned.iter().map(|m| &m[..])).unwrap(), 1000);
    let want: usize = owned.iter().map(Vec::len).sum();
    assert_eq!(reader.join().unwrap(), want);
}

#[test]
fn a_killed_producer_never_tears_a_message_and_is_replaced() {
    let _w = watchdog(300);
    let root = TestRoot::new("ch-kill-tx");
    let name = root.name("Local\\killtx");
    let s = root.opts().create_stream(&name, 1 << 12, 256).unwrap();
    let mut rx = s.receiver().unwrap();
    let mut next = 0u64;
    for round in 0..5u64 {
        let start = round * 1_000_000_000;
        let mut kid = Reap(spawn_role(
            ENTRY,
            "produce",
            &root.path,
            &[&name, &start.to_string(), &u64::MAX.to_string()],
        ));
        assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
        next = next.max(start);
        // Take some, kill it mid-stream (it is blocked in a send, or writing a message).
        for _ in 0..(1000 + round * 3000) {
            let got = recv_vec(&mut rx, LINE).unwrap();
            assert_eq!(check(&got), next, "order");
            next += 1;
        }
        kill_hard(&mut kid);
        // What it published comes whole; then the death, within the liveness period.
        let killed = Instant::now();
        loop {
            match recv_vec(&mut rx, LINE) {
                Ok(got) => {
                    assert_eq!(check(&got), next, "order");
                    next += 1;
                }
                Err(Error::Disconnected {
                    peer: "producer",
                    died: true,
                    ..
                }) => break,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(
            killed.elapsed() < Stream::LIVENESS_PERIOD + Duration::from_secs(5),
            "the death took {:?} to notice",
            killed.elapsed()
        );
        assert_eq!(s.producer_state(), Peer::Died);
    }
}

#[test]
fn a_killed_consumer_never_wedges_the_producer_and_is_replaced() {
    let _w = watchdog(300);
    let root = TestRoot::new("ch-kill-rx");
    let name = root.name("Local\\killrx");
    let s = root.opts().create_stream(&name, 1 << 12, 256).unwrap();
    let mut tx = s.sender().unwrap();
    let mut buf = Vec::new();
    let mut i = 0u64;
    for round in 0..5 {
        let mut kid = Reap(spawn_role(ENTRY, "consume", &root.path, &[&name]));
        assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
        // Feed it until it has checked a thousand, then kill it while it reads.
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            let feeder = sc.spawn(|| {
                while !stop.load(SeqCst) {
                    message(i, &mut buf);
                    match tx.send_timeout(&buf, Duration::from_millis(1)) {
                        Ok(()) => i += 1,
                        Err(Error::Timeout { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
            let line = read_line_within(&mut kid.0, LINE);
            assert!(line.parse::<u64>().is_ok(), "round {round}: {line}");
            stop.store(true, SeqCst);
            feeder.join().unwrap();
        });
        kill_hard(&mut kid);
        // The ring fills; then the producer hears of the death instead of waiting forever.
        let killed = Instant::now();
        let err = loop {
            message(i, &mut buf);
            match tx.send_timeout(&buf, LINE) {
                Ok(()) => i += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err,
                Error::Disconnected {
                    peer: "consumer",
                    died: true,
                    ..
                }
            ),
            "round {round}: {err}"
        );
        assert!(killed.elapsed() < Stream::LIVENESS_PERIOD + Duration::from_secs(5));
        assert_eq!(s.consumer_state(), Peer::Died);
    }
    // A last consumer takes everything that is queued, whole (the one a killed consumer
    // was reading comes again), and sees the clean end.
    let mut kid = Reap(spawn_role(ENTRY, "consume", &root.path, &[&name]));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    drop(tx);
    let mut last = String::new();
    while last != "eof" {
        last = read_line_within(&mut kid.0, LINE);
        assert!(last == "eof" || last.parse::<u64>().is_ok(), "{last}");
    }
    kid.0.wait().unwrap();
}

/// A killed consumer's successor starts at the first message it had not given back: none
/// is lost, and at most 256 (the release batch) come twice.
#[test]
fn a_killed_consumers_unreturned_messages_come_again_at_most_a_batch() {
    killed_consumers_messages_come_again_at_most_a_batch("take");
}

/// The same for a consumer killed inside a `recv_batch` longer than a release batch.
#[test]
fn a_consumer_killed_inside_a_long_recv_batch_leaves_at_most_a_batch() {
    killed_consumers_messages_come_again_at_most_a_batch("take-batch");
}

fn killed_consumers_messages_come_again_at_most_a_batch(role: &str) {
    let _w = watchdog(120);
    let root = TestRoot::new(&format!("ch-again-{role}"));
    let name = root.name("Local\\again");
    // Room for every message with the quarter-ring release never reached (1000 messages of
    // at most 216 bytes is under 256 KiB).
    let s = root.opts().create_stream(&name, 1 << 20, 256).unwrap();
    let mut tx = s.sender().unwrap();
    let mut buf = Vec::new();
    for i in 0..1000 {
        message(i, &mut buf);
        tx.send(&buf).unwrap();
    }
    let mut next = 0;
    for took in [300, 200] {
        let mut kid = Reap(spawn_role(
            ENTRY,
            role,
            &root.path,
            &[&name, &took.to_string()],
        ));
        let last = next + took - 1;
        assert_eq!(read_line_within(&mut kid.0, LINE), last.to_string());
        kill_hard(&mut kid);
        // The next consumer (this one) starts where the dead one last gave room back.
        let mut rx = s.receiver().unwrap();
        buf.clear();
        rx.recv().unwrap().append_to(&mut buf);
        let first = check(&buf);
        assert!(
            first <= last + 1 && last + 1 - first <= 256,
            "after a consumer that took {next}..={last}, the next one starts at {first}"
        );
        // A receiver that goes cleanly gives back what it received: the next starts after.
        drop(rx);
        next = first + 1;
    }
    // The rest comes whole and in order.
    let mut rx = s.receiver().unwrap();
    for i in next..1000 {
        buf.clear();
        rx.recv().unwrap().append_to(&mut buf);
        assert_eq!(check(&buf), i);
    }
    drop(tx);
    assert!(matches!(
        rx.recv(),
        Err(Error::Disconnected { died: false, .. })
    ));
}

/// A received message goes after what the buffer holds, whole; `to_vec` copies it alone.
#[test]
fn a_message_is_appended_to_what_the_buffer_holds() {
    let root = TestRoot::new("ch-append");
    let name = root.name("Local\\append");
    let s = root.opts().create_stream(&name, 1 << 18, 65536).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let big: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
    for m in [&b"abc"[..], &big, &big[..5]] {
        tx.send(m).unwrap();
    }
    let mut buf = b"x".to_vec();
    rx.recv().unwrap().append_to(&mut buf);
    assert_eq!(buf, b"xabc");
    rx.recv().unwrap().append_to(&mut buf);
    assert_eq!(&buf[..4], b"xabc");
    assert_eq!(&buf[4..], &big[..]);
    assert_eq!(rx.recv().unwrap().to_vec(), &big[..5]);
}

/// A kept message comes again, whole, and the room it takes stays taken until it is
/// received; a loan waits for room up to its timeout, and gets it once there is room.
#[test]
fn a_kept_message_comes_again_and_a_loan_waits_for_room() {
    let root = TestRoot::new("ch-keep");
    let name = root.name("Local\\keep");
    let s = root.opts().create_stream(&name, 4096, 1024).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let long = [7u8; 1000];
    tx.send(b"first").unwrap();
    tx.send(&long).unwrap();
    for _ in 0..3 {
        let m = rx.recv().unwrap();
        assert_eq!(m.to_vec(), b"first");
        m.keep();
    }
    assert_eq!(rx.recv().unwrap().to_vec(), b"first");
    let m = rx.try_recv().unwrap().unwrap();
    assert_eq!(m.len(), 1000);
    m.keep();
    // The kept message's room is not given back: the ring fills with it still there.
    let mut sent = 0;
    while tx.try_send(&long).is_ok() {
        sent += 1;
    }
    assert!(sent >= 1, "the ring had room for more");
    let t = Instant::now();
    match tx.loan_timeout(1000, Duration::from_millis(200)) {
        Err(Error::Timeout { what }) => assert!(what.contains("room"), "{what}"),
        other => panic!("a loan in a full ring: {:?}", other.map(|l| l.len())),
    }
    assert!(t.elapsed() >= Duration::from_millis(200));
    for _ in 0..=sent {
        assert_eq!(rx.recv().unwrap().to_vec(), long);
    }
    let mut loan = tx.loan_timeout(3, Duration::from_secs(5)).unwrap();
    loan.write_at(0, b"end").unwrap();
    loan.commit();
    assert_eq!(rx.recv().unwrap().to_vec(), b"end");
}

/// `recv_into` copies a message into a buffer and says how long it was; a message longer
/// than the buffer is refused with its length and stays first, for a larger buffer.
#[test]
fn recv_into_copies_whole_messages_and_keeps_one_that_does_not_fit() {
    let root = TestRoot::new("ch-into");
    let name = root.name("Local\\into");
    let s = root.opts().create_stream(&name, 1 << 16, 4096).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let long: Vec<u8> = (0..3000u32).map(|i| (i * 13 + 1) as u8).collect();
    for m in [&b"hello"[..], &b""[..], &long, &b"end"[..]] {
        tx.send(m).unwrap();
    }
    let mut small = [0u8; 100];
    assert_eq!(rx.recv_into(&mut small).unwrap(), 5);
    assert_eq!(&small[..5], b"hello");
    assert_eq!(rx.recv_into(&mut small).unwrap(), 0);
    for _ in 0..2 {
        match rx.recv_into(&mut small) {
            Err(Error::InvalidArgument { what }) => {
                assert!(what.contains("3000 bytes"), "{what}");
                assert!(what.contains("100"), "{what}");
            }
            other => panic!("a 3000-byte message into 100 bytes: {other:?}"),
        }
    }
    let mut large = vec![0u8; 4096];
    assert_eq!(rx.recv_into(&mut large).unwrap(), 3000);
    assert_eq!(&large[..3000], &long[..]);
    assert_eq!(rx.recv_into(&mut small).unwrap(), 3);
    assert_eq!(&small[..3], b"end");
    drop(tx);
    assert!(
        matches!(
            rx.recv_into(&mut small),
            Err(Error::Disconnected { died: false, .. })
        ),
        "after a clean close"
    );
}

#[test]
fn roles_are_exclusive_while_their_player_lives() {
    let root = TestRoot::new("ch-roles");
    let name = root.name("Local\\roles");
    let a = root.opts().create_stream(&name, 4096, 100).unwrap();
    let b = root.opts().open_stream(&name).unwrap();
    assert!(b.already_existed() && !a.already_existed());
    assert_eq!(a.producer_state(), Peer::Absent);
    let tx = a.sender().unwrap();
    assert_eq!(b.producer_state(), Peer::Connected);
    // The same handle, another handle, or another process: busy.
    assert!(matches!(
        a.sender(),
        Err(Error::Busy {
            role: "producer",
            ..
        })
    ));
    assert!(matches!(b.sender(), Err(Error::Busy { .. })));
    let rx = b.receiver().unwrap();
    assert!(matches!(
        a.receiver(),
        Err(Error::Busy {
            role: "consumer",
            ..
        })
    ));
    drop(tx);
    assert_eq!(b.producer_state(), Peer::Closed);
    let _tx = b.sender().unwrap();
    drop(rx);
    assert_eq!(a.consumer_state(), Peer::Closed);
    // The channel goes with its last handle, roles or not.
    drop((a, b, _tx));
    assert!(matches!(
        root.opts().open_stream(&name),
        Err(Error::NotFound { .. })
    ));
    #[cfg(target_os = "linux")]
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

#[test]
fn loans_and_in_place_reads() {
    let root = TestRoot::new("ch-loan");
    let name = root.name("Local\\loan");
    let s = root.opts().create_stream(&name, 256, 64).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let mut loan = tx.loan(11).unwrap();
    loan.write_at(0, b"hello").unwrap();
    loan.write_at(5, b" world").unwrap();
    assert!(matches!(
        loan.write_at(10, b"xx"),
        Err(Error::OutOfRange { .. })
    ));
    loan.commit();
    // A loan dropped without a commit sends nothing.
    tx.loan(3).unwrap().write_at(0, b"no!").unwrap();
    assert_eq!(s.queued(), 1);
    {
        let m = rx.try_recv().unwrap().unwrap();
        assert_eq!(m.len(), 11);
        let mut w = [0u8; 5];
        m.read_at(6, &mut w).unwrap();
        assert_eq!(&w, b"world");
        assert!(matches!(
            m.read_at(7, &mut w),
            Err(Error::OutOfRange { .. })
        ));
    }
    assert!(rx.try_recv().unwrap().is_none());
    // Full: try_send gives the message back.
    let big = [7u8; 64];
    let mut sent = 0;
    let back = loop {
        match tx.try_send(&big) {
            Ok(()) => sent += 1,
            Err(filemap::TrySendError::Full(m)) => break m,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(back, &big[..]);
    assert!(sent >= 2, "{sent}");
    assert!(matches!(
        tx.send(&[0u8; 65]),
        Err(Error::MessageTooLarge {
            len: 65,
            max: 64,
            ..
        })
    ));
    let t = Instant::now();
    assert!(matches!(
        tx.send_timeout(&big, Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
}

#[test]
fn detached_loans_are_sent_by_their_own_sender_unless_stale() {
    let root = TestRoot::new("ch-detach");
    let name = root.name("Local\\detach");
    let s = root.opts().create_stream(&name, 256, 64).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let got = |rx: &mut filemap::Receiver| rx.try_recv().unwrap().map(|m| m.to_vec());
    // Written and committed after the sender's borrow ended (the sender is used meanwhile).
    let mut loan = tx.loan(5).unwrap().detach();
    assert_eq!((loan.len(), loan.is_empty()), (5, false));
    loan.write_at(0, b"hel").unwrap();
    assert!(matches!(
        loan.write_at(4, b"xx"),
        Err(Error::OutOfRange { .. })
    ));
    tx.set_wait_strategy(filemap::WaitStrategy::Park);
    assert_eq!(tx.max_message(), 64);
    loan.write_at(3, b"lo").unwrap();
    assert_eq!(s.queued(), 0);
    tx.commit_detached(loan).unwrap();
    assert_eq!(got(&mut rx).as_deref(), Some(&b"hello"[..]));
    // Stale: the sender sent a message after the loan was made.
    let mut stale = tx.loan(3).unwrap().detach();
    stale.write_at(0, b"old").unwrap();
    tx.send(b"new").unwrap();
    let e = tx.commit_detached(stale).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("stale"), "{e}");
    assert_eq!(got(&mut rx).as_deref(), Some(&b"new"[..]));
    assert_eq!(got(&mut rx), None);
    // Of two loans made at one place, the first committed wins; the other is stale.
    let mut a = tx.loan(1).unwrap().detach();
    let mut b = tx.loan(2).unwrap().detach();
    a.write_at(0, b"a").unwrap();
    b.write_at(0, b"bb").unwrap();
    tx.commit_detached(b).unwrap();
    assert!(tx.commit_detached(a).is_err());
    assert_eq!(got(&mut rx).as_deref(), Some(&b"bb"[..]));
    // Another sender's loan (of another channel) is refused; a dropped one sends nothing.
    let other = root
        .opts()
        .create_stream(&root.name("Local\\detach2"), 256, 64)
        .unwrap();
    let mut tx2 = other.sender().unwrap();
    let foreign = tx2.loan(1).unwrap().detach();
    let e = tx.commit_detached(foreign).unwrap_err();
    assert!(e.to_string().contains("another sender"), "{e}");
    drop(tx2.loan(4).unwrap().detach());
    assert_eq!(other.queued(), 0);
    // Loans across the ring's end (a skip frame first), each committed detached.
    for i in 0..40u8 {
        let mut l = tx
            .loan_timeout(40, Duration::from_secs(10))
            .unwrap()
            .detach();
        l.write_at(0, &[i; 40]).unwrap();
        tx.commit_detached(l).unwrap();
        assert_eq!(got(&mut rx), Some(vec![i; 40]));
    }
    // The pointer stays mapped while the loan lives, even after the sender is gone.
    let mut late = tx.loan(2).unwrap().detach();
    drop(tx);
    assert!(!late.as_mut_ptr().is_null());
    late.write_at(0, b"ok").unwrap();
    drop(late);
    assert!(matches!(
        rx.try_recv(),
        Err(Error::Disconnected { died: false, .. })
    ));
}

/// A loan may be filled by another thread, and a received message read by one and
/// consumed (dropped) by another, as the `&mut Sender` and `&mut Receiver` that they
/// borrow may go to other threads.
#[test]
fn loans_and_messages_may_go_to_other_threads() {
    let root = TestRoot::new("ch-threads");
    let name = root.name("Local\\threads");
    let s = root.opts().create_stream(&name, 256, 64).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let mut loan = tx.loan(5).unwrap();
    std::thread::scope(|t| t.spawn(|| loan.write_at(0, b"hello")).join().unwrap()).unwrap();
    loan.commit();
    let msg = rx.try_recv().unwrap().unwrap();
    let got = std::thread::scope(|t| {
        t.spawn(|| {
            let mut b = [0u8; 5];
            msg.read_at(0, &mut b).map(|()| b)
        })
        .join()
        .unwrap()
    })
    .unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(s.queued(), 1);
    // Dropped in another thread, it is consumed there.
    std::thread::scope(|t| t.spawn(move || drop(msg)).join().unwrap());
    assert!(rx.try_recv().unwrap().is_none());
    assert_eq!(s.queued(), 0);
}

#[test]
fn detached_messages_are_consumed_by_their_own_receiver_unless_stale() {
    let root = TestRoot::new("ch-detach-rx");
    let name = root.name("Local\\detach-rx");
    let s = root.opts().create_stream(&name, 256, 64).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    for m in [&b"one"[..], b"two", b"three"] {
        tx.send(m).unwrap();
    }
    // Read after the receiver's borrow ended; consumed only by `consume_detached`.
    let m = rx.try_recv().unwrap().unwrap().detach();
    assert_eq!((m.len(), m.is_empty()), (3, false));
    assert!(!m.as_ptr().is_null());
    let mut b = [0u8; 3];
    m.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"one");
    assert!(matches!(
        m.read_at(1, &mut b),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(s.queued(), 3);
    rx.consume_detached(m).unwrap();
    // Dropped unconsumed, a message stays first; a detached message that was received
    // again (and consumed) meanwhile is stale.
    drop(rx.try_recv().unwrap().unwrap().detach());
    let stale = rx.try_recv().unwrap().unwrap().detach();
    assert_eq!(rx.try_recv().unwrap().unwrap().to_vec(), b"two");
    let e = rx.consume_detached(stale).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(e.to_string().contains("stale"), "{e}");
    assert_eq!(rx.try_recv().unwrap().unwrap().to_vec(), b"three");
    // Another receiver's message is refused, and stays first in its own channel.
    let other = root
        .opts()
        .create_stream(&root.name("Local\\detach-rx2"), 256, 64)
        .unwrap();
    let (mut tx2, mut rx2) = (other.sender().unwrap(), other.receiver().unwrap());
    tx2.send(b"theirs").unwrap();
    let foreign = rx2.try_recv().unwrap().unwrap().detach();
    let e = rx.consume_detached(foreign).unwrap_err();
    assert!(e.to_string().contains("another receiver"), "{e}");
    assert_eq!(rx2.try_recv().unwrap().unwrap().to_vec(), b"theirs");
    // Around the ring many times, every message consumed detached: the producer waits
    // for the room that they give back.
    for i in 0..100u8 {
        tx.send_timeout(&[i; 40], Duration::from_secs(10)).unwrap();
        let m = rx.try_recv().unwrap().unwrap().detach();
        let mut got = [0u8; 40];
        m.read_at(0, &mut got).unwrap();
        assert_eq!(got, [i; 40]);
        rx.consume_detached(m).unwrap();
    }
    assert_eq!(s.queued(), 0);
    // The bytes stay mapped while the message lives, even after both ends are gone.
    tx.send(b"last").unwrap();
    let last = rx.try_recv().unwrap().unwrap().detach();
    drop((tx, rx));
    let mut b = [0u8; 4];
    last.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"last");
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Pose {
    x: f64,
    y: f64,
    seq: u64,
}

// SAFETY: `repr(C)`, three 8-byte fields with no padding, and every bit pattern of each is
// valid (what `#[derive(Pod, Zeroable)]` would check).
#[allow(unsafe_code)]
unsafe impl bytemuck::Zeroable for Pose {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl bytemuck::Pod for Pose {}

#[test]
fn typed_streams_check_their_type() {
    let root = TestRoot::new("ch-typed");
    let name = root.name("Local\\typed");
    let s = root.opts().create_stream_of::<Pose>(&name, 100).unwrap();
    assert_eq!(s.max_message(), 24);
    assert!(s.capacity() >= 100 * 32);
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let p = Pose {
        x: 1.5,
        y: -2.0,
        seq: 7,
    };
    tx.send_value(&p).unwrap();
    assert_eq!(rx.recv_value::<Pose>().unwrap(), p);
    assert!(root.opts().open_stream_of::<Pose>(&name).is_ok());
    assert!(matches!(
        root.opts().open_stream_of::<[u64; 3]>(&name),
        Err(Error::Incompatible { .. })
    ));
    let bytes = root.name("Local\\bytes");
    let b = root.opts().create_stream(&bytes, 4096, 100).unwrap();
    assert!(matches!(
        root.opts().open_stream_of::<Pose>(&bytes),
        Err(Error::Incompatible { .. })
    ));
    // A value of a bytes stream: a message of another size is an error that says so, and
    // is passed over; the next message of the right size is the value.
    let (mut tx, mut rx) = (b.sender().unwrap(), b.receiver().unwrap());
    for msg in [&b"short"[..], &b"toolong!!"[..], &7u64.to_le_bytes()[..]] {
        tx.send(msg).unwrap();
    }
    for len in [5, 9] {
        match rx.recv_value::<u64>() {
            Err(e @ Error::Incompatible { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("a message of {len} bytes")),
                    "{text}"
                );
                assert!(text.contains("u64 of 8 bytes"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rx.recv_value::<u64>().unwrap(), 7);
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(1)),
        Err(Error::Timeout { .. })
    ));
}

/// Typed values have the try and timeout forms that bytes have, on every kind that takes
/// them: a stream's sender and receiver, a broadcast subscriber, a latest-value reader.
#[test]
fn typed_values_have_try_and_timeout_forms() {
    let root = TestRoot::new("ch-typed-forms");
    let o = root.opts();
    let short = Duration::from_millis(20);
    // A stream of `u64`: empty, then full, then drained; a value that does not fit comes
    // back whole.
    let s = o
        .create_stream_of::<u64>(&root.name("Local\\values"), 4)
        .unwrap();
    let (mut tx, mut rx) = (s.sender().unwrap(), s.receiver().unwrap());
    assert_eq!(rx.try_recv_value::<u64>().unwrap(), None);
    let t = Instant::now();
    assert!(matches!(
        rx.recv_value_timeout::<u64>(short),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= short);
    let mut sent = 0u64;
    loop {
        match tx.try_send_value(&sent) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(v)) => {
                assert_eq!(v, sent);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 1000, "the ring never filled");
    }
    assert!(sent >= 4, "{sent}");
    assert!(matches!(
        tx.send_value_timeout(&sent, short),
        Err(Error::Timeout { .. })
    ));
    assert_eq!(rx.recv_value_timeout::<u64>(short).unwrap(), 0);
    for i in 1..sent {
        assert_eq!(rx.try_recv_value::<u64>().unwrap(), Some(i));
    }
    tx.send_value_timeout(&sent, short).unwrap();
    drop(tx);
    assert_eq!(rx.try_recv_value::<u64>().unwrap(), Some(sent));
    assert!(matches!(
        rx.try_recv_value::<u64>(),
        Err(Error::Disconnected { .. })
    ));
    // A broadcast: nothing yet, then a value and what was lost before it (nothing).
    let b = o
        .create_broadcast_of::<u64>(&root.name("Local\\news"), 4)
        .unwrap();
    let (mut publisher, mut sub) = (b.publisher().unwrap(), b.subscriber().unwrap());
    assert_eq!(sub.try_recv_value::<u64>().unwrap(), None);
    assert!(matches!(
        sub.recv_value_timeout::<u64>(short),
        Err(Error::Timeout { .. })
    ));
    publisher.send_value(&5u64).unwrap();
    assert_eq!(sub.try_recv_value::<u64>().unwrap(), Some((5, 0)));
    // A message of another size: an error that says so, and passed over.
    publisher.send(b"odd").unwrap();
    publisher.send_value(&6u64).unwrap();
    match sub.recv_value_timeout::<u64>(short) {
        Err(e @ Error::Incompatible { .. }) => {
            assert!(e.to_string().contains("a message of 3 bytes"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sub.try_recv_value::<u64>().unwrap(), Some((6, 0)));
    // Lost messages before one of another size are told with the next value: of 7, 8,
    // "odd", 9 and 10 in 4 slots, 7 and 8 are written over.
    for v in [7u64, 8] {
        publisher.send_value(&v).unwrap();
    }
    publisher.send(b"odd").unwrap();
    for v in [9u64, 10] {
        publisher.send_value(&v).unwrap();
    }
    assert!(matches!(
        sub.try_recv_value::<u64>(),
        Err(Error::Incompatible { .. })
    ));
    assert_eq!(sub.try_recv_value::<u64>().unwrap(), Some((9, 2)));
    assert_eq!(sub.try_recv_value::<u64>().unwrap(), Some((10, 0)));
    // A latest value: nothing newer, then the value and its version.
    let l = o
        .create_latest_of::<[u32; 2]>(&root.name("Local\\state"))
        .unwrap();
    let (mut w, mut rd) = (l.writer().unwrap(), l.reader().unwrap());
    assert!(matches!(
        rd.wait_newer_value::<[u32; 2]>(0, Some(short)),
        Err(Error::Timeout { .. })
    ));
    w.publish_value(&[1u32, 2]).unwrap();
    assert_eq!(
        rd.wait_newer_value::<[u32; 2]>(0, Some(Duration::from_secs(5)))
            .unwrap(),
        ([1, 2], 1)
    );
    // A value of another size (bytes published into the typed channel): an error that
    // says so, from both reads; the next value of the right size reads again.
    w.publish(b"abc").unwrap();
    for got in [
        rd.read_value::<[u32; 2]>().map(|_| ()),
        rd.wait_newer_value::<[u32; 2]>(1, Some(short)).map(|_| ()),
    ] {
        match got {
            Err(e @ Error::Incompatible { .. }) => {
                assert!(e.to_string().contains("a value of 3 bytes"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
    w.publish_value(&[3u32, 4]).unwrap();
    assert_eq!(rd.read_value::<[u32; 2]>().unwrap(), Some(([3, 4], 3)));
}

/// Subscribers and latest-value readers read into buffers of their own: a message or
/// value that does not fit is an error that states its length, and is not read (a
/// subscriber gets it next, with the count of what it lost before it; a reader stays ready
/// for it in `wait_any`).
#[test]
fn subscribers_and_readers_read_into_buffers_of_their_own() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-into-slots");
    let o = root.opts();
    let short = Duration::from_millis(20);
    let msg = |i: u8| vec![i; 30];
    // The error for a message or value of `len` bytes and a buffer of 10.
    let too_long = |got: filemap::Result<()>, len: usize| match got {
        Err(e @ Error::InvalidArgument { .. }) => {
            let text = e.to_string();
            let says = format!("has {len} bytes, more than the buffer's 10");
            assert!(text.contains(&says), "{text}");
        }
        other => panic!("{other:?}"),
    };
    let b = o
        .create_broadcast(&root.name("Local\\news"), 8, 100)
        .unwrap();
    let mut publisher = b.publisher().unwrap();
    let mut sub = b.subscriber().unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(sub.try_recv_into(&mut buf).unwrap(), None);
    let t = Instant::now();
    assert!(matches!(
        sub.recv_into_timeout(&mut buf, short),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= short);
    publisher.send(b"hello").unwrap();
    assert_eq!(sub.recv_into(&mut buf).unwrap(), (5, 0));
    assert_eq!(&buf[..5], b"hello");
    // 20 messages into 8 slots: the subscriber lost the first 13. A buffer too small for
    // the next (number 13) leaves it the next, and the 13 lost are told with it.
    for i in 0..20 {
        publisher.send(&msg(i)).unwrap();
    }
    let mut small = [0u8; 10];
    too_long(sub.try_recv_into(&mut small).map(|_| ()), 30);
    assert_eq!(sub.try_recv_into(&mut buf).unwrap(), Some((30, 13)));
    assert_eq!(buf[..30], msg(13)[..]);
    // The same through a vector, after another refusal: nothing lost since.
    assert!(sub.try_recv_into(&mut small).is_err());
    let mut v = Vec::new();
    assert_eq!(sub.try_recv(&mut v).unwrap(), Some(0));
    assert_eq!(v, msg(14));
    assert_eq!(sub.recv_into_timeout(&mut buf, short).unwrap(), (30, 0));
    assert_eq!(buf[..30], msg(15)[..]);

    // A latest value.
    let l = o.create_latest(&root.name("Local\\state"), 64).unwrap();
    let mut r = l.reader().unwrap();
    assert_eq!(r.read_into(&mut buf).unwrap(), None);
    let mut w = l.writer().unwrap();
    w.publish(b"abc").unwrap();
    assert_eq!(r.read_into(&mut small).unwrap(), Some((3, 1)));
    assert_eq!(&small[..3], b"abc");
    w.publish(&[7; 40]).unwrap();
    too_long(r.read_into(&mut small).map(|_| ()), 40);
    too_long(
        r.wait_newer_into(1, &mut small, Some(short)).map(|_| ()),
        40,
    );
    // Not read: the reader is still ready for it.
    assert_eq!(
        filemap::wait_any(&[&r], Some(short)).unwrap(),
        filemap::WaitOutcome::Signalled(0)
    );
    assert_eq!(r.wait_newer_into(1, &mut buf, Some(LINE)).unwrap(), (40, 2));
    assert_eq!(buf[..40], [7; 40]);
    assert!(matches!(
        filemap::wait_any(&[&r], Some(short)),
        Err(Error::Timeout { .. })
    ));
    let t = Instant::now();
    assert!(matches!(
        r.wait_newer_into(2, &mut buf, Some(short)),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= short);
}

/// `Subscriber::recv_into_raw` and `LatestReader::read_into_raw`, for buffers that no
/// `&mut [u8]` may stand for (Python's): what fits is written, at any alignment; what does
/// not fit is not received, and stays the next or the latest; timeouts; and a value read
/// under a writer that keeps publishing is never torn.
#[test]
#[allow(unsafe_code)]
fn subscribers_and_readers_write_through_raw_pointers() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-into-raw");
    let o = root.opts();
    let short = Duration::from_millis(20);
    // Destinations one byte past an 8-byte boundary, so that every word is written
    // unaligned.
    let mut mem = vec![0u8; 8192 + 1];
    let dst = mem[1..].as_mut_ptr();
    let b = o
        .create_broadcast(&root.name("Local\\news"), 8, 100)
        .unwrap();
    let mut publisher = b.publisher().unwrap();
    let mut sub = b.subscriber().unwrap();
    let mut recv = |room: usize, timeout: Option<Duration>| {
        // SAFETY: `dst` points at 8192 bytes of `mem`, which no reference covers while
        // they are written (`mem` is used only between the calls); so below too.
        unsafe { sub.recv_into_raw(dst, room, timeout) }
    };
    assert_eq!(recv(64, Some(Duration::ZERO)).unwrap(), None);
    let t = Instant::now();
    assert_eq!(recv(64, Some(short)).unwrap(), None);
    assert!(t.elapsed() >= short);
    publisher.send(b"hello, world!").unwrap();
    assert_eq!(recv(64, None).unwrap(), Some((13, 0)));
    assert_eq!(&mem[1..14], b"hello, world!");
    // 20 messages into 8 slots: 13 lost. Too long for 10 bytes, number 13 stays the next,
    // and nothing is written.
    for i in 0..20u8 {
        publisher.send(&[i; 30]).unwrap();
    }
    mem.fill(0xee);
    let dst = mem[1..].as_mut_ptr();
    let mut recv = |room: usize| {
        // SAFETY: as above.
        unsafe { sub.recv_into_raw(dst, room, Some(short)) }
    };
    match recv(10) {
        Err(e @ Error::InvalidArgument { .. }) => {
            assert!(
                e.to_string()
                    .contains("has 30 bytes, more than the buffer's 10"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(mem.iter().all(|&x| x == 0xee));
    assert_eq!(recv(30).unwrap(), Some((30, 13)));
    assert_eq!(mem[1..31], [13; 30]);
    assert_eq!(mem[31], 0xee);

    // A latest value.
    let l = o.create_latest(&root.name("Local\\state"), 4096).unwrap();
    let mut r = l.reader().unwrap();
    let dst = mem[1..].as_mut_ptr();
    let read = |r: &mut filemap::LatestReader, room: usize| {
        // SAFETY: as above.
        unsafe { r.read_into_raw(dst, room) }
    };
    assert_eq!(read(&mut r, 64).unwrap(), None);
    let mut w = l.writer().unwrap();
    w.publish(&[7; 40]).unwrap();
    assert!(matches!(
        read(&mut r, 39),
        Err(Error::InvalidArgument { .. })
    ));
    // Not read: the reader is still ready for it.
    assert_eq!(
        filemap::wait_any(&[&r], Some(short)).unwrap(),
        filemap::WaitOutcome::Signalled(0)
    );
    assert_eq!(read(&mut r, 40).unwrap(), Some((40, 1)));
    assert_eq!(mem[1..41], [7; 40]);
    assert!(matches!(
        filemap::wait_any(&[&r], Some(short)),
        Err(Error::Timeout { .. })
    ));
    // Waiting for a newer value: a timeout, one too long (not read), then read.
    let t = Instant::now();
    // SAFETY: as above.
    let waited = unsafe { r.wait_newer_into_raw(1, dst, 64, Some(short)) };
    assert!(matches!(waited, Err(Error::Timeout { .. })), "{waited:?}");
    assert!(t.elapsed() >= short);
    w.publish(&[9; 50]).unwrap();
    // SAFETY: as above.
    let waited = unsafe { r.wait_newer_into_raw(1, dst, 49, Some(short)) };
    assert!(
        matches!(waited, Err(Error::InvalidArgument { .. })),
        "{waited:?}"
    );
    // SAFETY: as above.
    let waited = unsafe { r.wait_newer_into_raw(1, dst, 50, Some(LINE)) };
    assert_eq!(waited.unwrap(), (50, 2));
    assert_eq!(mem[1..51], [9; 50]);
    // Under a writer that keeps publishing values of 4093 equal bytes (a partial last
    // word), every read is whole.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0u8;
            while !stop.load(SeqCst) {
                k = k.wrapping_add(1);
                w.publish(&[k; 4093]).unwrap();
            }
        });
        let start = Instant::now();
        let mut reads = 0;
        while reads < 2000 || start.elapsed() < Duration::from_millis(200) {
            let (len, _) = read(&mut r, 4096).unwrap().unwrap();
            if len == 4093 {
                let first = mem[1];
                assert!(mem[1..4094].iter().all(|&x| x == first), "a torn value");
                reads += 1;
            }
        }
        stop.store(true, SeqCst);
    });
}

/// Requests and replies as values: a call, a reply from a `Replier`, and a request of the
/// wrong size, which the server reports and answers with an empty reply, so that the
/// client is not left waiting.
#[test]
fn request_reply_values() {
    let root = TestRoot::new("ch-rpc-values");
    let rr = root
        .opts()
        .create_request_reply(&root.name("Local\\calc"), 2, 64, 64)
        .unwrap();
    let mut server = rr.server().unwrap();
    let mut client = rr.client().unwrap();
    let served = std::thread::scope(|s| {
        let serving = s.spawn(|| {
            let (t, [a, b]) = server.recv_value::<[u32; 2]>(Some(LINE)).unwrap();
            assert!(server.reply_value(t, &u64::from(a * b)).unwrap());
            let (t, x) = server.recv_value::<[u32; 2]>(Some(LINE)).unwrap();
            assert!(server
                .replier()
                .reply_value(t, &u64::from(x[0] + x[1]))
                .unwrap());
            // A request of another size: an error here, an empty reply there.
            let e = server.recv_value::<[u32; 2]>(Some(LINE)).unwrap_err();
            assert!(matches!(e, Error::Incompatible { .. }), "{e}");
            assert!(e.to_string().contains("a request of 3 bytes"), "{e}");
        });
        assert_eq!(
            client.call_value::<_, u64>(&[6u32, 7], Some(LINE)).unwrap(),
            42
        );
        client.send_request_value(&[6u32, 7]).unwrap();
        assert_eq!(client.wait_reply_value::<u64>(Some(LINE)).unwrap(), 13);
        client.send_request(b"odd").unwrap();
        let e = client.wait_reply_value::<u64>(Some(LINE)).unwrap_err();
        assert!(e.to_string().contains("a reply of 0 bytes"), "{e}");
        serving.join()
    });
    served.unwrap();
    assert!(matches!(
        server.recv_value::<[u32; 2]>(Some(Duration::from_millis(1))),
        Err(Error::Timeout { .. })
    ));
}

#[test]
fn bad_input_and_other_kinds() {
    let root = TestRoot::new("ch-bad");
    let o = root.opts();
    let name = root.name("Local\\bad");
    for (cap, max) in [(1000, 10), (32, 8), (4096, 0), (4096, 4089), (1 << 31, 10)] {
        assert!(
            matches!(
                o.create_stream(&name, cap, max),
                Err(Error::InvalidArgument { .. })
            ),
            "{cap} {max}"
        );
    }
    assert!(matches!(
        o.create_stream("Local\\a\\b", 4096, 10),
        Err(Error::InvalidName { .. })
    ));
    // One namespace for every kind.
    let m = o.create_mutex(&name).unwrap();
    assert!(matches!(
        o.create_stream(&name, 4096, 10),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        o.open_stream(&name),
        Err(Error::KindMismatch { .. })
    ));
    drop(m);
    let s = o.create_stream(&name, 4096, 10).unwrap();
    assert!(matches!(
        o.open(&name, filemap::Access::Read),
        Err(Error::KindMismatch {
            found: Kind::Stream,
            ..
        })
    ));
    assert!(matches!(
        o.create_stream(&name, 4096, 10),
        Err(Error::AlreadyExists { .. })
    ));
    // An existing stream keeps its geometry.
    let again = o.open_or_create_stream(&name, 1 << 20, 1000).unwrap();
    assert!(again.already_existed());
    assert_eq!((again.capacity(), again.max_message()), (4096, 10));
    drop((s, again));
    #[cfg(target_os = "linux")]
    assert!(root.local_files().is_empty(), "{:?}", root.local_files());
}

// The object file is reachable by path on Linux only.
#[cfg(target_os = "linux")]
#[test]
fn a_corrupt_control_page_is_an_error() {
    use std::os::unix::fs::FileExt;
    let mut rng = garbage::Rng(0x1234_5678_9abc_def0);
    for kind in CHANNEL_KINDS {
        let root = TestRoot::new("ch-corrupt");
        let name = root.name("Local\\corrupt");
        let o = root.opts();
        let quit = o.create_event(&root.name("Local\\q"), true, false).unwrap();
        let (_channel, path) = make_channel(&o, &name, kind);
        let original = std::fs::read(&path).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Every byte of the header in turn, and random bytes.
        let (mut refused, mut taken) = (0, 0);
        for round in 0..200 {
            let mut header = original[..48].to_vec();
            if round < 48 {
                header[round] ^= 0xff;
            } else {
                header.iter_mut().for_each(|b| *b = rng.next() as u8);
            }
            file.write_all_at(&header, 0).unwrap();
            for near in [true, false] {
                match End::open(kind, &name, &o, near) {
                    Err(Error::Corrupt { .. }) => refused += 1,
                    // Some bytes are free (padding) or do not matter: it still works.
                    Ok(mut end) => {
                        end.poke(round as u64, &quit);
                        taken += 1;
                    }
                    Err(e) => panic!("{kind}, round {round}: {e}"),
                }
            }
        }
        assert!(refused > 300 && taken > 0, "{kind}: {refused} {taken}");
        file.write_all_at(&original, 0).unwrap();
        if kind == "stream" {
            // Positions that no ring can have: refused at the role, not a crash.
            file.write_all_at(&12_345_677u32.to_le_bytes(), 128)
                .unwrap();
            let t = o.open_stream(&name).unwrap();
            assert!(matches!(t.sender(), Err(Error::Corrupt { .. })));
            assert!(matches!(t.receiver(), Err(Error::Corrupt { .. })));
        }
    }
}

/// The channel kinds, as the garbage tests name them.
#[cfg(target_os = "linux")]
const CHANNEL_KINDS: [&str; 4] = ["stream", "broadcast", "latest", "request-reply"];

/// Creates a channel of `kind` with messages of up to [`GARBAGE_MAX`] bytes; returns its
/// handle (kept to keep it alive) and its file.
#[cfg(target_os = "linux")]
fn make_channel(
    o: &filemap::Options,
    name: &str,
    kind: &str,
) -> (Box<dyn std::any::Any>, std::path::PathBuf) {
    match kind {
        "stream" => {
            let c = o.create_stream(name, 4096, GARBAGE_MAX).unwrap();
            let path = c.os_path();
            (Box::new(c), path)
        }
        "broadcast" => {
            let c = o.create_broadcast(name, 8, GARBAGE_MAX).unwrap();
            let path = c.os_path();
            (Box::new(c), path)
        }
        "latest" => {
            let c = o.create_latest(name, GARBAGE_MAX).unwrap();
            let path = c.os_path();
            (Box::new(c), path)
        }
        _ => {
            let c = o
                .create_request_reply(name, 4, GARBAGE_MAX, GARBAGE_MAX)
                .unwrap();
            let path = c.os_path();
            (Box::new(c), path)
        }
    }
}

/// The bytes of a channel's header (docs/channels.md).
#[cfg(target_os = "linux")]
const HEADER: usize = 128;

/// The largest message of the channels in the garbage test.
const GARBAGE_MAX: u32 = 200;

/// One end of a channel of any kind, for the garbage test.
enum End {
    Send(filemap::Sender),
    Receive(filemap::Receiver),
    Publish(filemap::Publisher),
    Subscribe(filemap::Subscriber),
    Write(filemap::LatestWriter),
    Read(filemap::LatestReader),
    Serve(filemap::RpcServer),
    Call(filemap::RpcClient),
}

impl End {
    /// The near end (the parent's: the one that sends) or the far end of the channel
    /// `name` of `kind`.
    fn open(kind: &str, name: &str, o: &filemap::Options, near: bool) -> filemap::Result<End> {
        Ok(match (kind, near) {
            ("stream", true) => End::Send(o.open_stream(name)?.sender()?),
            ("stream", false) => End::Receive(o.open_stream(name)?.receiver()?),
            ("broadcast", true) => End::Publish(o.open_broadcast(name)?.publisher()?),
            ("broadcast", false) => End::Subscribe(o.open_broadcast(name)?.subscriber()?),
            ("latest", true) => End::Write(o.open_latest(name)?.writer()?),
            ("latest", false) => End::Read(o.open_latest(name)?.reader()?),
            ("request-reply", true) => End::Call(o.open_request_reply(name)?.client()?),
            ("request-reply", false) => End::Serve(o.open_request_reply(name)?.server()?),
            other => panic!("no end {other:?}"),
        })
    }

    /// Lets go of `end` and takes the same end again, over whatever the channel holds now:
    /// "ok", or "corrupt" if the channel's state is refused (and then there is no end).
    fn reopen(
        end: &mut Option<End>,
        kind: &str,
        name: &str,
        o: &filemap::Options,
        near: bool,
    ) -> &'static str {
        *end = None;
        match End::open(kind, name, o, near) {
            Ok(e) => {
                *end = Some(e);
                "ok"
            }
            Err(Error::Corrupt { .. }) => "corrupt",
            Err(e) => panic!("reopening the {kind}: {e}"),
        }
    }

    /// Makes every call of this end that returns by itself, each with a short timeout,
    /// and checks what the calls give; returns the errors that say `Corrupt`.
    fn poke(&mut self, round: u64, quit: &filemap::Event) -> usize {
        use filemap::TrySendError;
        let short = Duration::from_millis(1);
        let (mut msg, mut buf) = (Vec::new(), Vec::new());
        message(round, &mut msg);
        msg.truncate(GARBAGE_MAX as usize);
        let fits = |n: usize| assert!(n <= GARBAGE_MAX as usize, "a message of {n} bytes");
        let results: Vec<filemap::Result<()>> = match self {
            End::Send(tx) => vec![
                match tx.try_send(&msg) {
                    Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
                    Err(TrySendError::Disconnected(_, e) | TrySendError::Failed(e)) => Err(e),
                },
                tx.send_timeout(&msg, short),
                tx.loan_timeout(8, short).and_then(|mut loan| {
                    loan.write_at(0, &round.to_le_bytes())?;
                    loan.commit();
                    Ok(())
                }),
            ],
            End::Receive(rx) => vec![
                rx.try_recv().map(|m| {
                    if let Some(m) = m {
                        fits(m.len());
                        fits(m.to_vec().len());
                    }
                }),
                filemap::wait_any(&[quit, &*rx], Some(short)).map(drop),
                rx.recv_timeout(short).and_then(|m| {
                    let mut first = [0u8; 1];
                    fits(m.len());
                    m.read_at(0, &mut first[..m.len().min(1)])
                }),
            ],
            End::Publish(p) => vec![
                p.send(&msg),
                p.loan(8).and_then(|mut loan| {
                    loan.write_at(0, &round.to_le_bytes())?;
                    loan.commit();
                    Ok(())
                }),
            ],
            End::Subscribe(sub) => vec![
                sub.try_recv(&mut buf).map(|_| fits(buf.len())),
                filemap::wait_any(&[quit, &*sub], Some(short)).map(drop),
                sub.recv_timeout(&mut buf, short).map(|_| fits(buf.len())),
            ],
            End::Write(w) => vec![w.publish(&msg)],
            End::Read(r) => vec![
                r.read(&mut buf).map(|_| fits(buf.len())),
                filemap::wait_any(&[quit, &*r], Some(short)).map(drop),
                r.wait_newer(round, &mut buf, Some(short))
                    .map(|_| fits(buf.len())),
            ],
            End::Serve(server) => vec![
                filemap::wait_any(&[quit, &*server], Some(short)).map(drop),
                server.recv(&mut buf, Some(short)).and_then(|ticket| {
                    fits(buf.len());
                    server.reply(ticket, &msg).map(drop)
                }),
            ],
            // The reply to the last round's request first: the server answered it after
            // this end's call had timed out, and then the bytes were scribbled over.
            End::Call(c) => vec![
                filemap::wait_any(&[quit, &*c], Some(short)).map(drop),
                c.wait_reply(&mut buf, Some(short))
                    .map(|()| fits(buf.len())),
                c.call(&msg, &mut buf, Some(short))
                    .map(|()| fits(buf.len())),
            ],
        };
        results
            .iter()
            .filter(|r| matches!(r, Err(Error::Corrupt { .. })))
            .count()
    }
}

/// Another process that may write a channel (a peer with a bug, or another user given
/// 0666) scribbles over its data area while both ends use it: every call still returns,
/// within its timeout or with an error, and no process dies of a panic or a signal.
#[cfg(target_os = "linux")]
#[test]
fn garbage_in_a_live_channel_is_an_error_never_a_crash_or_a_hang() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let _w = watchdog(300);
    let mut rng = garbage::Rng(0x2545_f491_4f6c_dd1d);
    for kind in CHANNEL_KINDS {
        let root = TestRoot::new("ch-garbage");
        let name = root.name("Local\\scribbled");
        let o = root.opts();
        // The channel's handle, kept to the end, and its file.
        let (channel, path) = make_channel(&o, &name, kind);
        // The data area: everything but the record in the last page. The garbage goes
        // after the header, which an opener reads once and refuses if it is wrong
        // (`a_corrupt_control_page_is_an_error`); the state behind it is read all the time.
        let area = std::fs::metadata(&path).unwrap().len() as usize - 4096;
        let fresh = std::fs::read(&path).unwrap()[..area].to_vec();
        let mut near = Some(End::open(kind, &name, &o, true).unwrap());
        let mut reopened = [0; 2];
        let quit = o
            .create_event(&root.name("Local\\quit"), true, false)
            .unwrap();
        let mut kid = Reap(spawn_role(ENTRY, "scribbled", &root.path, &[&name, kind]));
        assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // One round: every call at this end, `info`, then every call at the far end.
        let step = |near: &mut Option<End>, kid: &mut Reap, round: u64| {
            let corrupt = near.as_mut().map_or(0, |e| e.poke(round, &quit));
            let info = root.ns().info(&name);
            assert!(info.is_ok(), "{kind}: {info:?}");
            // What a listing says stays possible: a ring holds at most one message per
            // 8 bytes, whatever the counters say.
            if let Some(filemap::SyncState::Channel {
                queued: Some(queued),
                capacity,
                ..
            }) = info.unwrap().state
            {
                assert!(queued <= u64::from(capacity / 8), "{kind}: {queued} queued");
            }
            writeln!(kid.0.stdin.as_mut().unwrap(), "go").unwrap();
            let ok = read_line_within(&mut kid.0, LINE);
            assert_eq!(ok, "ok", "{kind}, round {round}");
            corrupt
        };
        let mut corrupt = 0;
        for round in 0..300u64 {
            garbage::scribble(&file, HEADER, area, round, &mut rng);
            if round % 25 == 24 {
                // Both ends again, over the garbage.
                let mut both = |near: &mut Option<End>| {
                    let here = End::reopen(near, kind, &name, &o, true);
                    writeln!(kid.0.stdin.as_mut().unwrap(), "reopen").unwrap();
                    [here.to_owned(), read_line_within(&mut kid.0, LINE)]
                };
                let said = both(&mut near);
                for (i, said) in said.iter().enumerate() {
                    match said.as_str() {
                        "ok" => reopened[i] += 1,
                        "corrupt" => {}
                        other => panic!("{kind}, round {round}: {other:?}"),
                    }
                }
                if said.iter().any(|s| s == "corrupt") {
                    // A channel made fresh again (as a new one would be) is taken at once.
                    file.write_all_at(&fresh, 0).unwrap();
                    assert_eq!(both(&mut near), ["ok", "ok"], "{kind}, round {round}");
                }
            }
            corrupt += step(&mut near, &mut kid, round);
        }
        // Then the same while another thread scribbles all the time.
        file.write_all_at(&vec![0u8; area - HEADER], HEADER as u64)
            .unwrap();
        garbage::scribbling(&file, HEADER, area, || {
            for round in 300..500 {
                corrupt += step(&mut near, &mut kid, round);
            }
        });
        drop(kid.0.stdin.take());
        let bye = read_line_within(&mut kid.0, LINE);
        let far: usize = bye.strip_prefix("bye ").expect(&bye).parse().unwrap();
        let status = kid.0.wait().unwrap();
        assert!(status.success(), "{kind}: the far end {status:?}");
        eprintln!("{kind}: reopened {reopened:?} times of 12");
        eprintln!("{kind}: {corrupt} calls at the near end and {far} at the far end said corrupt");
        if kind == "stream" {
            // A ring's positions are checked at every call: garbage there is seen.
            assert!(corrupt > 0 && far > 0, "the checks never saw the garbage");
        }
        // Whatever the bytes, the name still goes with the last handle.
        drop((near, quit, channel, file));
        assert_eq!(root.local_files(), Vec::<String>::new(), "{kind}");
    }
}

#[test]
fn a_broadcast_reaches_every_subscriber_and_a_slow_one_is_told_what_it_lost() {
    let _w = watchdog(300);
    let root = TestRoot::new("ch-bcast");
    let name = root.name("Local\\bcast");
    let b = root.opts().create_broadcast(&name, 64, 256).unwrap();
    let mut fast = Reap(spawn_role(ENTRY, "subscribe", &root.path, &[&name, "0"]));
    let mut slow = Reap(spawn_role(ENTRY, "subscribe", &root.path, &[&name, "200"]));
    assert_eq!(read_line_within(&mut fast.0, LINE), "ready");
    assert_eq!(read_line_within(&mut slow.0, LINE), "ready");
    // A subscriber killed at once: the publisher and the others carry on.
    let mut doomed = Reap(spawn_role(
        ENTRY,
        "subscribe",
        &root.path,
        &[&name, "100000"],
    ));
    assert_eq!(read_line_within(&mut doomed.0, LINE), "ready");
    let mut p = b.publisher().unwrap();
    let n = 20_000u64;
    let mut buf = Vec::new();
    for i in 0..n {
        message(i, &mut buf);
        p.send(&buf).unwrap();
        if i == 100 {
            kill_hard(&mut doomed);
        }
        // Paced so that the fast one keeps up: a publisher never waits for anyone.
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    drop(p);
    let parse = |line: String| -> (u64, u64) {
        let mut it = line.split(' ').map(|w| w.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    let (fast_seen, fast_lost) = parse(read_line_within(&mut fast.0, LINE));
    let (slow_seen, slow_lost) = parse(read_line_within(&mut slow.0, LINE));
    assert_eq!(
        fast_seen + fast_lost,
        n,
        "the fast one accounts for every message"
    );
    // How much the fast one reads depends on the machine's load (under Wine, with other
    // work running, it once read an eighth): only that it reads, and loses no count.
    assert!(fast_seen > 0, "{fast_seen}");
    assert!(slow_lost > 0, "the slow one fell behind: {slow_seen} seen");
    assert_eq!(slow_seen + slow_lost, n);
    fast.0.wait().unwrap();
    slow.0.wait().unwrap();
}

#[test]
fn loaned_slots_are_written_in_place_and_published_whole() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-slotloan");
    let name = root.name("Local\\slotloan");
    let b = root.opts().create_broadcast(&name, 8, 256).unwrap();
    let mut kid = Reap(spawn_role(ENTRY, "subscribe", &root.path, &[&name, "0"]));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    let mut p = b.publisher().unwrap();
    // Bad input: a loan too large, writes outside the loan; a loan dropped publishes
    // nothing.
    assert!(matches!(
        p.loan(257),
        Err(Error::MessageTooLarge { max: 256, .. })
    ));
    {
        let mut l = p.loan(16).unwrap();
        assert_eq!((l.len(), l.is_empty()), (16, false));
        for (offset, len) in [(10, 7), (16, 1), (usize::MAX, 1)] {
            assert!(
                matches!(
                    l.write_at(offset, &vec![0; len]),
                    Err(Error::OutOfRange { .. })
                ),
                "{offset} {len}"
            );
        }
    }
    // Messages built in place in two pieces, the second first, read whole by a subscriber
    // in another process.
    let mut buf = Vec::new();
    for i in 0..2000u64 {
        message(i, &mut buf);
        let mut l = p.loan(buf.len()).unwrap();
        let cut = (i as usize * 13) % buf.len();
        l.write_at(cut, &buf[cut..]).unwrap();
        l.write_at(0, &buf[..cut]).unwrap();
        l.commit();
        if i % 8 == 7 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(p);
    let (seen, lost) = seen_and_lost(&mut kid);
    assert_eq!(seen + lost, 2000, "{seen} seen, {lost} lost");
    assert!(seen > 0);

    // A latest value: readers get the one before until the loan is committed.
    let l = root
        .opts()
        .create_latest(&root.name("Local\\slotloan-latest"), 64)
        .unwrap();
    let (mut w, mut r) = (l.writer().unwrap(), l.reader().unwrap());
    w.publish(b"first").unwrap();
    let mut loan = w.loan(6).unwrap();
    loan.write_at(0, b"sec").unwrap();
    assert_eq!(r.read(&mut buf).unwrap(), Some(1));
    assert_eq!(buf, b"first");
    loan.write_at(3, b"ond").unwrap();
    loan.commit();
    assert_eq!(r.read(&mut buf).unwrap(), Some(2));
    assert_eq!(buf, b"second");
}

/// The permissions of this process's mappings of the file at `path`, as
/// `/proc/self/maps` shows them ("rw-s", "r--s"), in address order.
#[cfg(target_os = "linux")]
fn mapped_as(path: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    // By inode: the creator's mapping shows the file under the name it had before it was
    // linked in.
    let ino = std::fs::metadata(path).unwrap().ino().to_string();
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some(&ino))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    v.sort();
    v
}

#[test]
fn read_only_handles_read_and_wait_but_never_write() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-readonly");
    let (bname, lname) = (root.name("Local\\robcast"), root.name("Local\\rolatest"));
    let b = root.opts().create_broadcast(&bname, 8, 256).unwrap();
    let l = root.opts().create_latest(&lname, 256).unwrap();
    let rb = root.opts().open_broadcast_read_only(&bname).unwrap();
    let rl = root.opts().open_latest_read_only(&lname).unwrap();
    assert!(rb.is_read_only() && rl.is_read_only());
    assert!(!b.is_read_only() && !l.is_read_only());
    // The memory is mapped read-only: no code path can write it.
    #[cfg(target_os = "linux")]
    {
        assert_eq!(mapped_as(&b.os_path()), ["r--s", "rw-s"]);
        assert_eq!(mapped_as(&l.os_path()), ["r--s", "rw-s"]);
    }
    // The writing roles are refused, in words.
    for e in [rb.publisher().err(), rl.writer().err()] {
        let e = e.expect("a writing role on a read-only handle");
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        assert!(e.to_string().contains("read-only"), "{e}");
    }
    // Readers take no role: all 64 read-write subscribers may connect beside them, and
    // only those count as peers.
    let subs: Vec<_> = (0..64).map(|_| b.subscriber().unwrap()).collect();
    assert!(matches!(b.subscriber(), Err(Error::Busy { .. })));
    let mut ro_sub = rb.subscriber().unwrap();
    #[cfg(target_os = "linux")]
    {
        let peers = |name: &str| match root.ns().info(name).unwrap().state {
            Some(filemap::SyncState::Channel { peers, .. }) => peers,
            other => panic!("{other:?}"),
        };
        assert_eq!(peers(&bname), 64);
        let rw_reader = l.reader().unwrap();
        let _ro_reader = rl.reader().unwrap();
        assert_eq!(peers(&lname), 1);
        drop(rw_reader);
        assert_eq!(peers(&lname), 0);
    }
    drop(subs);

    // A latest value from another process, whole, then a newer one waited for; the
    // writer's death is noticed.
    let mut buf = Vec::new();
    let mut reader = rl.reader().unwrap();
    assert_eq!(reader.read(&mut buf).unwrap(), None);
    let mut kid = Reap(spawn_role(ENTRY, "write-latest", &root.path, &[&lname]));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    let mut last = 0;
    for _ in 0..200 {
        last = reader.wait_newer(last, &mut buf, Some(LINE)).unwrap();
        assert_eq!(check(&buf), last, "value {last} is whole and its own");
    }
    kill_hard(&mut kid);
    let t = Instant::now();
    loop {
        match reader.wait_newer(last, &mut buf, Some(LINE)) {
            Ok(v) => last = v,
            Err(Error::Disconnected { died: true, .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(t.elapsed() < Stream::LIVENESS_PERIOD + Duration::from_secs(5));

    // A read-only subscriber in another process reads every message, as one with a role
    // does, until the publisher closes.
    let mut kid = Reap(spawn_role(
        ENTRY,
        "subscribe",
        &root.path,
        &[&bname, "0", "ro"],
    ));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    let mut p = b.publisher().unwrap();
    for i in 0..2000 {
        message(i, &mut buf);
        p.send(&buf).unwrap();
        if i % 8 == 7 {
            // Now and then, time to catch up (a subscriber may lose messages otherwise).
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    // Our own read-only subscriber, which waits in `wait_any`, is woken by its poll.
    let quit = root
        .opts()
        .create_event(&root.name("Local\\roquit"), true, false)
        .unwrap();
    // It subscribed before the first: all but the last 7 were written over (the oldest of
    // the 8 slots counts as lost, as the next message goes there).
    assert_eq!(ro_sub.try_recv(&mut buf).unwrap(), Some(2000 + 1 - 8));
    assert_eq!(check(&buf), 1993);
    for i in 1994..2000 {
        assert_eq!(ro_sub.try_recv(&mut buf).unwrap(), Some(0));
        assert_eq!(check(&buf), i);
    }
    let t = Instant::now();
    assert!(matches!(
        filemap::wait_any(&[&quit, &ro_sub], Some(Duration::from_millis(50))),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    drop(p);
    let (seen, lost) = seen_and_lost(&mut kid);
    assert_eq!(seen + lost, 2000, "{seen} seen, {lost} lost");
    assert!(seen > 0);
    // The close wakes its wait (it looks again, as nothing may ask the publisher to wake
    // it), as do a new publisher in another process and its death.
    follows_its_publishers(&root, &bname, &mut ro_sub, &quit);
}

#[test]
fn latest_values_are_never_torn_and_a_dead_writer_leaves_the_last_one() {
    let _w = watchdog(300);
    let root = TestRoot::new("ch-latest");
    let name = root.name("Local\\latest");
    let l = root.opts().create_latest(&name, 256).unwrap();
    let mut r = l.reader().unwrap();
    let mut buf = Vec::new();
    assert_eq!(r.read(&mut buf).unwrap(), None);
    for round in 0..3 {
        let before = r.read(&mut buf).unwrap().unwrap_or(0);
        let mut kid = Reap(spawn_role(ENTRY, "write-latest", &root.path, &[&name]));
        assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
        // At least 200,000 reads, and on until this round's writer has written 1,000
        // values: with every test running at once on two CPUs, the writer could get no
        // CPU during a fixed number of reads (the test failed about one run in twelve).
        let (mut newest, mut reads) = (0, 0u64);
        while reads < 200_000 || newest < before + 1000 {
            if let Some(v) = r.read(&mut buf).unwrap() {
                assert!(v >= newest);
                newest = v;
                check(&buf);
            }
            reads += 1;
        }
        kill_hard(&mut kid);
        // The last whole value stays; waiting for a newer one tells of the death.
        let last = r.read(&mut buf).unwrap().unwrap();
        check(&buf);
        match r.wait_newer(last, &mut buf, Some(LINE)) {
            Err(Error::Disconnected {
                peer: "writer",
                died: true,
                ..
            }) => {}
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(r.read(&mut buf).unwrap(), Some(last));
    }
}

#[test]
fn several_clients_share_one_server_which_can_die_and_be_replaced() {
    let _w = watchdog(300);
    let root = TestRoot::new("ch-rpc");
    let name = root.name("Local\\rpc");
    let rr = root
        .opts()
        .create_request_reply(&name, 4, 256, 256)
        .unwrap();
    let mut kids: Vec<Reap> = (0..3)
        .map(|_| Reap(spawn_role(ENTRY, "call", &root.path, &[&name, "3000"])))
        .collect();
    for k in &mut kids {
        assert_eq!(read_line_within(&mut k.0, LINE), "ready");
    }
    {
        let mut server = rr.server().unwrap();
        let mut buf = Vec::new();
        for _ in 0..9000 {
            let t = server.recv(&mut buf, Some(LINE)).unwrap();
            check(&buf);
            buf.reverse();
            assert!(server.reply(t, &buf).unwrap());
        }
    }
    for k in &mut kids {
        assert_eq!(read_line_within(&mut k.0, LINE), "done");
        k.0.wait().unwrap();
    }
    // A fifth client while four are connected: refused. Then a server that closes while a
    // client waits: the client hears of it.
    let _held: Vec<_> = (0..4).map(|_| rr.client().unwrap()).collect();
    assert!(matches!(rr.client(), Err(Error::Busy { .. })));
    drop(_held);
    let mut kid = Reap(spawn_role(ENTRY, "call", &root.path, &[&name, "1"]));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    let server = rr.server().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(server);
    assert_eq!(read_line_within(&mut kid.0, LINE), "disconnected false");
    kid.0.wait().unwrap();
}

#[test]
fn every_kind_is_one_object_in_one_namespace() {
    let root = TestRoot::new("ch-kinds");
    let o = root.opts();
    let name = root.name("Local\\kinds");
    let _b = o.create_broadcast(&name, 8, 64).unwrap();
    assert!(matches!(
        o.create_latest(&name, 64),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        o.open_stream(&name),
        Err(Error::KindMismatch { .. })
    ));
    assert!(matches!(
        o.create_request_reply(&name, 2, 8, 8),
        Err(Error::KindMismatch { .. })
    ));
    let info = root.ns().info(&name).unwrap();
    assert_eq!(info.kind, Some(Kind::Broadcast));
    for (slots, max) in [(3, 64), (1, 64), (8, 0), (8, (1 << 24) + 1)] {
        assert!(matches!(
            o.create_broadcast(&root.name("Local\\bad"), slots, max),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        o.create_request_reply(&root.name("Local\\bad"), 65, 8, 8),
        Err(Error::InvalidArgument { .. })
    ));
    let l = o.create_latest(&root.name("Local\\value"), 16).unwrap();
    let mut w = l.writer().unwrap();
    assert!(matches!(
        w.publish(&[0; 17]),
        Err(Error::MessageTooLarge {
            len: 17,
            max: 16,
            ..
        })
    ));
    assert!(matches!(l.writer(), Err(Error::Busy { .. })));
}

#[test]
fn a_receiver_waits_together_with_events() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-any");
    let name = root.name("Local\\any");
    let quit = root
        .opts()
        .create_event(&root.name("Local\\quit"), true, false)
        .unwrap();
    let s = root.opts().create_stream(&name, 4096, 256).unwrap();
    let mut rx = s.receiver().unwrap();
    // Nothing yet: a timeout.
    let t = Instant::now();
    assert!(matches!(
        filemap::wait_any(&[&quit, &rx], Some(Duration::from_millis(100))),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    // A message from another process wakes the wait, and is then received.
    let mut kid = Reap(spawn_role(ENTRY, "produce", &root.path, &[&name, "0", "1"]));
    let outcome = filemap::wait_any(&[&quit, &rx], Some(LINE)).unwrap();
    assert_eq!(outcome, filemap::WaitOutcome::Signalled(1));
    let got = rx.try_recv().unwrap().unwrap().to_vec();
    assert_eq!(check(&got), 0);
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    assert_eq!(read_line_within(&mut kid.0, LINE), "done");
    kid.0.wait().unwrap();
    // The producer closed: ready, and the receive says so.
    assert_eq!(
        filemap::wait_any(&[&quit, &rx], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    assert!(matches!(
        rx.try_recv(),
        Err(Error::Disconnected { died: false, .. })
    ));
    // A producer that dies while we wait: noticed within the liveness period.
    let mut kid = Reap(spawn_role(
        ENTRY,
        "produce",
        &root.path,
        &[&name, "1000000", "1000001"],
    ));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    rx.recv_timeout(LINE).unwrap();
    let mut kid2 = Reap(spawn_role(ENTRY, "hold", &root.path, &[&name]));
    let _ = kid.0.wait();
    assert_eq!(read_line_within(&mut kid2.0, LINE), "ready");
    kill_hard(&mut kid2);
    let t = Instant::now();
    assert_eq!(
        filemap::wait_any(&[&quit, &rx], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    assert!(t.elapsed() < Stream::LIVENESS_PERIOD + Duration::from_secs(5));
    assert!(matches!(
        rx.try_recv(),
        Err(Error::Disconnected { died: true, .. })
    ));
    // The event still wins when it is set.
    quit.set().unwrap();
    assert_eq!(
        filemap::wait_any(&[&quit, &rx], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(0)
    );
}

/// A subscriber that waits in `wait_any` beside `quit` (not set), after its publisher sent
/// its last message: the publisher's clean close wakes it (and the receive says so); then a
/// new publisher in another process sends a message (read first), and dies while we wait:
/// noticed within the liveness period.
fn follows_its_publishers(
    root: &TestRoot,
    name: &str,
    sub: &mut filemap::Subscriber,
    quit: &filemap::Event,
) {
    let mut buf = Vec::new();
    assert_eq!(
        filemap::wait_any(&[quit, &*sub], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    assert!(matches!(
        sub.try_recv(&mut buf),
        Err(Error::Disconnected { died: false, .. })
    ));
    let mut kid = Reap(spawn_role(
        ENTRY,
        "publish",
        &root.path,
        &[name, "1", "hold"],
    ));
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    assert_eq!(read_line_within(&mut kid.0, LINE), "done");
    assert_eq!(
        filemap::wait_any(&[quit, &*sub], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    assert_eq!(sub.try_recv(&mut buf).unwrap(), Some(0));
    assert_eq!(check(&buf), 0);
    kill_hard(&mut kid);
    let t = Instant::now();
    assert_eq!(
        filemap::wait_any(&[quit, &*sub], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    assert!(t.elapsed() < Stream::LIVENESS_PERIOD + Duration::from_secs(5));
    assert!(matches!(
        sub.try_recv(&mut buf),
        Err(Error::Disconnected { died: true, .. })
    ));
}

/// The "seen lost" line that a "subscribe" child reports when its publisher closes, and
/// the child's clean exit.
fn seen_and_lost(kid: &mut Reap) -> (u64, u64) {
    let line = read_line_within(&mut kid.0, LINE);
    let (seen, lost) = line.split_once(' ').unwrap();
    let seen_lost = (seen.parse().unwrap(), lost.parse().unwrap());
    assert!(kid.0.wait().unwrap().success(), "{line}");
    seen_lost
}

#[test]
fn a_subscriber_waits_together_with_events() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-anysub");
    let name = root.name("Local\\anysub");
    let quit = root
        .opts()
        .create_event(&root.name("Local\\quit"), true, false)
        .unwrap();
    let b = root.opts().create_broadcast(&name, 4, 256).unwrap();
    let mut sub = b.subscriber().unwrap();
    let mut buf = Vec::new();
    // Nothing yet: a timeout.
    let t = Instant::now();
    assert!(matches!(
        filemap::wait_any(&[&quit, &sub], Some(Duration::from_millis(100))),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    // A message from another process wakes the wait, and is then received.
    let mut kid = Reap(spawn_role(ENTRY, "publish", &root.path, &[&name, "1"]));
    let outcome = filemap::wait_any(&[&quit, &sub], Some(LINE)).unwrap();
    assert_eq!(outcome, filemap::WaitOutcome::Signalled(1));
    assert_eq!(sub.try_recv(&mut buf).unwrap(), Some(0));
    assert_eq!(check(&buf), 0);
    assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
    assert_eq!(read_line_within(&mut kid.0, LINE), "done");
    kid.0.wait().unwrap();
    follows_its_publishers(&root, &name, &mut sub, &quit);
    // The event still wins when it is set.
    quit.set().unwrap();
    assert_eq!(
        filemap::wait_any(&[&quit, &sub], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(0)
    );
}

#[test]
fn a_server_waits_together_with_events() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-anyrpc");
    let name = root.name("Local\\anyrpc");
    let quit = root
        .opts()
        .create_event(&root.name("Local\\quit"), true, false)
        .unwrap();
    let rr = root
        .opts()
        .create_request_reply(&name, 2, 256, 256)
        .unwrap();
    let mut server = rr.server().unwrap();
    let mut req = Vec::new();
    for round in 0..2 {
        // Nothing yet (and, the second time, nothing left): a timeout.
        let t = Instant::now();
        assert!(matches!(
            filemap::wait_any(&[&quit, &server], Some(Duration::from_millis(100))),
            Err(Error::Timeout { .. })
        ));
        assert!(t.elapsed() >= Duration::from_millis(100), "round {round}");
        // A request from another process wakes the wait, and is then taken and answered.
        let mut kid = Reap(spawn_role(ENTRY, "call", &root.path, &[&name, "1"]));
        assert_eq!(read_line_within(&mut kid.0, LINE), "ready");
        assert_eq!(
            filemap::wait_any(&[&quit, &server], Some(LINE)).unwrap(),
            filemap::WaitOutcome::Signalled(1)
        );
        let ticket = server.recv(&mut req, Some(Duration::ZERO)).unwrap();
        let mut reply = req.clone();
        reply.reverse();
        assert!(server.reply(ticket, &reply).unwrap());
        assert_eq!(read_line_within(&mut kid.0, LINE), "done");
        kid.0.wait().unwrap();
    }
    // The event still wins when it is set.
    quit.set().unwrap();
    assert_eq!(
        filemap::wait_any(&[&quit, &server], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(0)
    );
}

#[test]
fn latest_readers_and_clients_wait_together_with_events() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-anymore");
    let o = root.opts();
    let quit = o
        .create_event(&root.name("Local\\quit"), true, false)
        .unwrap();
    let short = Some(Duration::from_millis(50));
    let timed_out =
        |r: filemap::Result<filemap::WaitOutcome>| matches!(r, Err(Error::Timeout { .. }));
    // A latest-value reader: ready once a value newer than the last it read is there.
    let l = o.create_latest(&root.name("Local\\value"), 64).unwrap();
    let mut r = l.reader().unwrap();
    let mut buf = Vec::new();
    assert!(timed_out(filemap::wait_any(&[&quit, &r], short)));
    let mut w = l.writer().unwrap();
    w.publish(b"one").unwrap();
    assert_eq!(
        filemap::wait_any(&[&quit, &r], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    assert_eq!(r.read(&mut buf).unwrap(), Some(1));
    assert!(timed_out(filemap::wait_any(&[&quit, &r], short)));
    w.publish(b"two").unwrap();
    assert_eq!(
        filemap::wait_any(&[&quit, &r], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    assert_eq!(r.wait_newer(1, &mut buf, Some(LINE)).unwrap(), 2);
    assert_eq!(buf, b"two");
    drop(w);
    assert_eq!(
        filemap::wait_any(&[&quit, &r], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1),
        "the writer closed"
    );
    // A client: ready with no request pending (a wait would not wait), then once the
    // reply has come.
    let rr = o
        .create_request_reply(&root.name("Local\\rpc"), 2, 64, 64)
        .unwrap();
    let mut server = rr.server().unwrap();
    let mut client = rr.client().unwrap();
    assert_eq!(
        filemap::wait_any(&[&quit, &client], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    client.send_request(b"ping").unwrap();
    assert!(timed_out(filemap::wait_any(&[&quit, &client], short)));
    let t = server.recv(&mut buf, Some(LINE)).unwrap();
    assert!(
        timed_out(filemap::wait_any(&[&quit, &client], short)),
        "taken, not answered"
    );
    assert!(server.reply(t, b"gnip").unwrap());
    assert_eq!(
        filemap::wait_any(&[&quit, &client], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(1)
    );
    client.wait_reply(&mut buf, Some(Duration::ZERO)).unwrap();
    assert_eq!(buf, b"gnip");
    // The event still wins when it is set.
    quit.set().unwrap();
    assert_eq!(
        filemap::wait_any(&[&quit, &r, &client], Some(LINE)).unwrap(),
        filemap::WaitOutcome::Signalled(0)
    );
}

#[test]
fn a_request_outlives_a_timed_out_wait_until_the_next_one() {
    let root = TestRoot::new("ch-pending");
    let rr = root
        .opts()
        .create_request_reply(&root.name("Local\\pending"), 1, 16, 16)
        .unwrap();
    let mut c = rr.client().unwrap();
    let mut reply = Vec::new();
    assert!(matches!(
        c.wait_reply(&mut reply, Some(Duration::from_millis(10))),
        Err(Error::InvalidArgument { .. })
    ));
    c.send_request(b"first").unwrap();
    let t = Instant::now();
    assert!(matches!(
        c.wait_reply(&mut reply, Some(Duration::from_millis(50))),
        Err(Error::Timeout { .. })
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    // The server comes late: the request is still there, and so is the wait.
    let mut server = rr.server().unwrap();
    let mut req = Vec::new();
    let ticket = server.recv(&mut req, Some(LINE)).unwrap();
    assert_eq!(req, b"first");
    assert!(server.reply(ticket, b"late").unwrap());
    c.wait_reply(&mut reply, Some(LINE)).unwrap();
    assert_eq!(reply, b"late");
    // A request given up for the next: its reply never reaches the next call.
    c.send_request(b"second").unwrap();
    let old = server.recv(&mut req, Some(LINE)).unwrap();
    c.send_request(b"third").unwrap();
    assert!(!server.reply(old, b"for second").unwrap());
    let t3 = server.recv(&mut req, Some(LINE)).unwrap();
    assert_eq!(req, b"third");
    assert!(server.reply(t3, b"for third").unwrap());
    c.wait_reply(&mut reply, Some(LINE)).unwrap();
    assert_eq!(reply, b"for third");
}

#[test]
fn a_replier_answers_while_the_server_waits_for_the_next_request() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-replier");
    let rr = root
        .opts()
        .create_request_reply(&root.name("Local\\replier"), 2, 16, 16)
        .unwrap();
    let mut server = rr.server().unwrap();
    let replier = server.replier();
    let mut first = rr.client().unwrap();
    let mut second = rr.client().unwrap();
    first.send_request(b"one").unwrap();
    let mut req = Vec::new();
    let ticket = server.recv(&mut req, Some(LINE)).unwrap();
    assert_eq!(req, b"one");
    std::thread::scope(|s| {
        // The server waits for the next request in one thread ...
        let next = s.spawn(|| {
            let mut req = Vec::new();
            let t = server.recv(&mut req, Some(LINE)).unwrap();
            (t, req)
        });
        // ... while another answers the first, which arrives before any second request.
        std::thread::sleep(Duration::from_millis(50));
        assert!(replier.reply(ticket, b"1").unwrap());
        let mut reply = Vec::new();
        first.wait_reply(&mut reply, Some(LINE)).unwrap();
        assert_eq!(reply, b"1");
        second.send_request(b"two").unwrap();
        let (t2, req2) = next.join().unwrap();
        assert_eq!(req2, b"two");
        assert!(replier.reply(t2, b"2").unwrap());
        second.wait_reply(&mut reply, Some(LINE)).unwrap();
        assert_eq!(reply, b"2");
    });
    // Too large, as for the server; after the server goes, a replier answers nothing.
    first.send_request(b"three").unwrap();
    let t3 = server.recv(&mut req, Some(LINE)).unwrap();
    assert!(matches!(
        replier.reply(t3, &[0u8; 17]),
        Err(Error::MessageTooLarge { .. })
    ));
    drop(server);
    assert!(!replier.reply(t3, b"3").unwrap());
    let mut reply = Vec::new();
    assert!(matches!(
        first.wait_reply(&mut reply, Some(LINE)),
        Err(Error::Disconnected { .. })
    ));
}

/// A replier answering while its server is dropped and a new server takes the request
/// back: the client gets one whole answer, the old server's or the new one's, never bytes
/// of both (the drop waits for answers under way before it gives the role up).
#[test]
fn a_replier_racing_its_servers_drop_never_mixes_two_answers() {
    let _w = watchdog(120);
    let root = TestRoot::new("ch-replier-race");
    let rr = root
        .opts()
        .create_request_reply(&root.name("Local\\replier-race"), 1, 16, 1 << 20)
        .unwrap();
    let mut client = rr.client().unwrap();
    let (old, new) = (vec![b'o'; 1 << 20], vec![b'n'; 1 << 20]);
    let (mut req, mut reply) = (Vec::new(), Vec::new());
    let mut server = rr.server().unwrap();
    for _ in 0..500 {
        client.send_request(b"q").unwrap();
        let t = server.recv(&mut req, Some(LINE)).unwrap();
        let replier = server.replier();
        let go = std::sync::Barrier::new(2);
        server = std::thread::scope(|s| {
            s.spawn(|| {
                go.wait();
                replier.reply(t, &old).unwrap()
            });
            go.wait();
            drop(server);
            let mut next = rr.server().unwrap();
            // The request is pending again unless the old server's answer got in first.
            match next.recv(&mut req, Some(Duration::ZERO)) {
                Ok(t) => assert!(next.reply(t, &new).unwrap()),
                Err(Error::Timeout { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            next
        });
        client.wait_reply(&mut reply, Some(LINE)).unwrap();
        assert!(
            reply == old || reply == new,
            "a mixed answer: {} bytes of the old server's, {} of the new one's",
            reply.iter().filter(|&&b| b == b'o').count(),
            reply.iter().filter(|&&b| b == b'n').count()
        );
    }
}

/// Minor page faults taken by this thread so far (`/proc/thread-self/stat`, field 10).
#[cfg(target_os = "linux")]
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command name, which ends with the last ')': state is field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

/// The ring's pages are mapped when a channel is opened, so the first lap of messages
/// takes no page faults (without that: one per page, per side, mid-send).
#[cfg(target_os = "linux")]
#[test]
fn the_first_lap_through_a_ring_takes_no_page_faults() {
    let root = TestRoot::new("ch-faults");
    let name = root.name("Local\\faults");
    let o = root.opts();
    let s = o.create_stream(&name, 1 << 20, 4096).unwrap();
    let mut tx = s.sender().unwrap();
    // A second handle: its own mapping, as in another process.
    let mut rx = o.open_stream(&name).unwrap().receiver().unwrap();
    let msg = vec![5u8; 4096];
    let mut buf = vec![0u8; 4096];
    // Touch the buffers (and the first page of the ring) before counting.
    tx.send(&msg).unwrap();
    rx.recv().unwrap().read_at(0, &mut buf).unwrap();
    let before = minor_faults();
    // 256 frames of 4104 bytes: a whole lap of the 1 MiB ring, 256 pages on each side.
    for _ in 0..256 {
        tx.send(&msg).unwrap();
        rx.recv().unwrap().read_at(0, &mut buf).unwrap();
    }
    let faults = minor_faults() - before;
    assert!(
        faults < 16,
        "{faults} page faults in the first lap of a 1 MiB ring"
    );
    assert_eq!(buf, msg);
}

/// The room of received messages goes back to the producer without another receive
/// once the consumer has received everything it saw: one thread that fills the ring and
/// then empties it, again and again, never waits for room that is free. (Before, up to 31
/// received frames stayed booked until the next receive, and the second fill waited for
/// them forever.)
#[test]
fn room_goes_back_once_everything_seen_is_received() {
    let root = TestRoot::new("ch-room");
    let s = root
        .opts()
        .create_stream(&root.name("Local\\room"), 1 << 16, 1024)
        .unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    let msg = [9u8; 64];
    let mut buf = [0u8; 64];
    // As many 72-byte frames as fit, less one for a skip frame at the wrap.
    let fit = (1 << 16) / 72 - 1;
    for round in 0..20 {
        let mut sent = 0;
        while sent < fit {
            match tx.try_send(&msg) {
                Ok(()) => sent += 1,
                Err(e) => panic!("round {round}: message {sent} of {fit} found no room: {e}"),
            }
        }
        for _ in 0..fit {
            rx.recv().unwrap().read_at(0, &mut buf).unwrap();
        }
    }
    assert!(rx.try_recv().unwrap().is_none());
}
