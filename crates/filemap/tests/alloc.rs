//! No heap allocation per message: every channel kind's send and receive paths, raw
//! bytes and typed values, counted by a global allocator that counts each thread's
//! allocations. Each kind is warmed up first (a buffer that grows to the largest message
//! allocates once), then a thousand messages must allocate nothing.
// Linux and Windows (under Wine in CI).
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use common::TestRoot;
use filemap::WaitStrategy;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting the allocations of each thread (the tests of this
/// binary run in parallel threads, so a process-wide count would mix them).
struct Counting;

#[allow(unsafe_code)]
// SAFETY: every call is passed on unchanged to the system allocator, whose contract is
// the one asked for; the count is a thread-local `Cell` that is initialised without
// allocating (`const`).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's promises are the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as in `dealloc`, and `new_size` is the caller's valid size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations by this thread so far.
fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const MESSAGES: u64 = 1000;

/// Runs `step` once to warm up, then [`MESSAGES`] times, and asserts that those
/// allocated nothing.
fn assert_no_allocation(what: &str, mut step: impl FnMut(u64)) {
    step(0);
    let before = allocations();
    for i in 1..=MESSAGES {
        step(i);
    }
    let n = allocations() - before;
    assert_eq!(n, 0, "{what}: {n} allocations in {MESSAGES} messages");
}

/// The counter itself counts: a test that could not fail would prove nothing.
#[test]
fn the_counter_sees_an_allocation() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn stream_messages_allocate_nothing() {
    let root = TestRoot::new("alloc-stream");
    let s = root
        .opts()
        .create_stream(&root.name("Local\\alloc-stream"), 1 << 16, 1024)
        .unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    tx.set_wait_strategy(WaitStrategy::BusyPoll);
    rx.set_wait_strategy(WaitStrategy::BusyPoll);
    let payload = [7u8; 200];
    let mut buf = [0u8; 200];
    let mut grown = Vec::new();
    assert_no_allocation("send and recv", |i| {
        tx.send(&payload[..(i % 200) as usize]).unwrap();
        let m = rx.recv().unwrap();
        m.read_at(0, &mut buf[..m.len()]).unwrap();
    });
    assert_no_allocation("send and recv_into", |i| {
        tx.send(&payload[..(i % 200) as usize]).unwrap();
        assert_eq!(rx.recv_into(&mut buf).unwrap(), (i % 200) as usize);
    });
    assert_no_allocation("try_send and try_recv", |_| {
        tx.try_send(&payload).unwrap();
        let m = rx.try_recv().unwrap().unwrap();
        grown.clear();
        m.append_to(&mut grown);
    });
    assert_no_allocation("timeouts", |_| {
        tx.send_timeout(&payload, Duration::from_secs(5)).unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .read_at(0, &mut buf)
            .unwrap();
    });
    assert_no_allocation("loans", |i| {
        let mut loan = tx.loan(8).unwrap();
        loan.write_at(0, &i.to_le_bytes()).unwrap();
        loan.commit();
        let mut word = [0u8; 8];
        rx.recv().unwrap().read_at(0, &mut word).unwrap();
        assert_eq!(u64::from_le_bytes(word), i);
    });
    assert_no_allocation("batches", |_| {
        let n = tx.send_all(std::iter::repeat_n(&payload[..], 16)).unwrap();
        assert_eq!(n, 16);
        let mut got = 0;
        while got < 16 {
            got += rx
                .recv_batch(16, |m| m.read_at(0, &mut buf).unwrap())
                .unwrap();
        }
    });
    // An empty ring: try_recv finds nothing, without allocating either.
    assert_no_allocation("an empty try_recv", |_| {
        assert!(rx.try_recv().unwrap().is_none());
    });
    // A full ring: try_send and try_loan are refused, without allocating.
    let mut sent = 0u64;
    while tx.try_send(&payload).is_ok() {
        sent += 1;
    }
    assert!(sent > 100, "only {sent} messages fit");
    assert_no_allocation("a full try_send and try_loan", |_| {
        assert!(matches!(
            tx.try_send(&payload),
            Err(filemap::TrySendError::Full(_))
        ));
        assert!(tx.try_loan(200).unwrap().is_none());
    });
    for _ in 0..sent {
        rx.recv().unwrap().read_at(0, &mut buf).unwrap();
    }
    assert!(rx.try_recv().unwrap().is_none());
}

#[test]
fn typed_stream_values_allocate_nothing() {
    let root = TestRoot::new("alloc-typed");
    let s = root
        .opts()
        .create_stream_of::<[u64; 3]>(&root.name("Local\\alloc-typed"), 64)
        .unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    assert_no_allocation("send_value and recv_value", |i| {
        tx.send_value(&[i, i + 1, i + 2]).unwrap();
        assert_eq!(rx.recv_value::<[u64; 3]>().unwrap(), [i, i + 1, i + 2]);
    });
    assert_no_allocation("their try and timeout forms", |i| {
        assert_eq!(rx.try_recv_value::<[u64; 3]>().unwrap(), None);
        tx.try_send_value(&[i; 3]).unwrap();
        tx.send_value_timeout(&[i + 1; 3], Duration::from_secs(5))
            .unwrap();
        assert_eq!(rx.try_recv_value::<[u64; 3]>().unwrap(), Some([i; 3]));
        assert_eq!(
            rx.recv_value_timeout::<[u64; 3]>(Duration::from_secs(5))
                .unwrap(),
            [i + 1; 3]
        );
    });
}

#[test]
fn broadcast_messages_allocate_nothing() {
    let root = TestRoot::new("alloc-broadcast");
    let b = root
        .opts()
        .create_broadcast(&root.name("Local\\alloc-bc"), 16, 256)
        .unwrap();
    let mut tx = b.publisher().unwrap();
    let mut rx = b.subscriber().unwrap();
    let payload = [3u8; 256];
    // Room for the largest message from the start: the test is about the channel.
    let mut buf = Vec::with_capacity(256);
    assert_no_allocation("send and recv", |i| {
        tx.send(&payload[..(i % 256) as usize]).unwrap();
        assert_eq!(rx.recv(&mut buf).unwrap(), 0);
        assert_eq!(buf.len(), (i % 256) as usize);
    });
    assert_no_allocation("try_recv and recv_timeout", |_| {
        tx.send(&payload).unwrap();
        assert_eq!(rx.try_recv(&mut buf).unwrap(), Some(0));
        tx.send(&payload).unwrap();
        rx.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!(rx.try_recv(&mut buf).unwrap(), None);
    });
    assert_no_allocation("loans", |i| {
        let mut loan = tx.loan(13).unwrap();
        loan.write_at(5, &i.to_le_bytes()).unwrap();
        loan.commit();
        assert_eq!(rx.recv(&mut buf).unwrap(), 0);
        assert_eq!(buf[5..], i.to_le_bytes());
    });
    let mut into = [0u8; 256];
    assert_no_allocation("recv_into, try_recv_into and recv_into_timeout", |i| {
        let len = (i % 256) as usize;
        tx.send(&payload[..len]).unwrap();
        assert_eq!(rx.recv_into(&mut into).unwrap(), (len, 0));
        assert_eq!(rx.try_recv_into(&mut into).unwrap(), None);
        tx.send(&payload).unwrap();
        assert_eq!(rx.try_recv_into(&mut into).unwrap(), Some((256, 0)));
        tx.send(&payload).unwrap();
        let t = Duration::from_secs(5);
        assert_eq!(rx.recv_into_timeout(&mut into, t).unwrap(), (256, 0));
    });
    assert_no_allocation("recv_into_raw", |i| {
        let len = (i % 256) as usize;
        tx.send(&payload[..len]).unwrap();
        // SAFETY: `into` is 256 bytes, and no reference covers them during the call.
        #[allow(unsafe_code)]
        let got = unsafe { rx.recv_into_raw(into.as_mut_ptr(), into.len(), None) };
        assert_eq!(got.unwrap(), Some((len, 0)));
    });
    let typed = root
        .opts()
        .create_broadcast_of::<u64>(&root.name("Local\\alloc-bc-typed"), 16)
        .unwrap();
    let mut tx = typed.publisher().unwrap();
    let mut rx = typed.subscriber().unwrap();
    assert_no_allocation("send_value and recv_value", |i| {
        tx.send_value(&i).unwrap();
        assert_eq!(rx.recv_value::<u64>().unwrap(), (i, 0));
    });
    assert_no_allocation("try_recv_value and recv_value_timeout", |i| {
        assert_eq!(rx.try_recv_value::<u64>().unwrap(), None);
        tx.send_value(&i).unwrap();
        assert_eq!(rx.try_recv_value::<u64>().unwrap(), Some((i, 0)));
        tx.send_value(&i).unwrap();
        assert_eq!(
            rx.recv_value_timeout::<u64>(Duration::from_secs(5))
                .unwrap(),
            (i, 0)
        );
    });
}

#[test]
fn latest_values_allocate_nothing() {
    let root = TestRoot::new("alloc-latest");
    let l = root
        .opts()
        .create_latest(&root.name("Local\\alloc-latest"), 128)
        .unwrap();
    let mut w = l.writer().unwrap();
    let mut r = l.reader().unwrap();
    let mut buf = Vec::new();
    assert_no_allocation("publish and read", |i| {
        w.publish(&[i as u8; 128]).unwrap();
        assert_eq!(r.read(&mut buf).unwrap(), Some(i + 1));
    });
    let before = r.read(&mut buf).unwrap().unwrap();
    assert_no_allocation("loans", |i| {
        let mut loan = w.loan(8).unwrap();
        loan.write_at(0, &i.to_le_bytes()).unwrap();
        loan.commit();
        assert_eq!(r.read(&mut buf).unwrap(), Some(before + i + 1));
        assert_eq!(buf, i.to_le_bytes());
    });
    let mut into = [0u8; 128];
    let before = r.read_into(&mut into).unwrap().unwrap().1;
    assert_no_allocation("read_into and wait_newer_into", |i| {
        w.publish(&[i as u8; 100]).unwrap();
        assert_eq!(
            r.read_into(&mut into).unwrap(),
            Some((100, before + 2 * i + 1))
        );
        w.publish(&[i as u8; 128]).unwrap();
        let t = Some(Duration::from_secs(5));
        let newer = r.wait_newer_into(before + 2 * i + 1, &mut into, t).unwrap();
        assert_eq!(newer, (128, before + 2 * i + 2));
    });
    let before = r.read_into(&mut into).unwrap().unwrap().1;
    assert_no_allocation("read_into_raw", |i| {
        w.publish(&[i as u8; 100]).unwrap();
        // SAFETY: `into` is 128 bytes, and no reference covers them during the call.
        #[allow(unsafe_code)]
        let got = unsafe { r.read_into_raw(into.as_mut_ptr(), into.len()) };
        assert_eq!(got.unwrap(), Some((100, before + i + 1)));
    });
    let typed = root
        .opts()
        .create_latest_of::<[u32; 4]>(&root.name("Local\\alloc-latest-typed"))
        .unwrap();
    let mut w = typed.writer().unwrap();
    let mut r = typed.reader().unwrap();
    assert_no_allocation("publish_value and read_value", |i| {
        let v = [i as u32; 4];
        w.publish_value(&v).unwrap();
        assert_eq!(r.read_value::<[u32; 4]>().unwrap(), Some((v, i + 1)));
    });
    let before = r.read_value::<[u32; 4]>().unwrap().unwrap().1;
    assert_no_allocation("wait_newer_value", |i| {
        let v = [i as u32 + 7; 4];
        w.publish_value(&v).unwrap();
        assert_eq!(
            r.wait_newer_value::<[u32; 4]>(before + i, Some(Duration::from_secs(5)))
                .unwrap(),
            (v, before + i + 1)
        );
    });
}

#[test]
fn requests_and_replies_allocate_nothing() {
    let root = TestRoot::new("alloc-rpc");
    let rr = root
        .opts()
        .create_request_reply(&root.name("Local\\alloc-rpc"), 4, 64, 64)
        .unwrap();
    let mut server = rr.server().unwrap();
    let mut client = rr.client().unwrap();
    let replier = server.replier();
    let (mut request, mut reply) = (Vec::new(), Vec::new());
    assert_no_allocation("a request and its reply", |i| {
        client.send_request(&i.to_le_bytes()).unwrap();
        let t = server
            .recv(&mut request, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(request, i.to_le_bytes());
        if i % 2 == 0 {
            assert!(server.reply(t, &request).unwrap());
        } else {
            assert!(replier.reply(t, &request).unwrap());
        }
        client
            .wait_reply(&mut reply, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(reply, i.to_le_bytes());
    });
    assert_no_allocation("values", |i| {
        client.send_request_value(&[i, i + 1]).unwrap();
        let (t, [a, b]) = server
            .recv_value::<[u64; 2]>(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(server.reply_value(t, &(a + b)).unwrap());
        assert_eq!(
            client
                .wait_reply_value::<u64>(Some(Duration::from_secs(5)))
                .unwrap(),
            2 * i + 1
        );
    });
}

/// "A message or quit": `wait_any` over an event, a semaphore, a mutex and a stream
/// receiver, both when a message is there already and when the wait has to sleep until
/// another thread sends one.
#[test]
fn waiting_for_a_message_or_quit_allocates_nothing() {
    let root = TestRoot::new("alloc-wait");
    let o = root.opts();
    let quit = o
        .create_event(&root.name("Local\\alloc-quit"), true, false)
        .unwrap();
    let sem = o
        .create_semaphore(&root.name("Local\\alloc-sem"), 0, 1)
        .unwrap();
    let lock = o.create_mutex(&root.name("Local\\alloc-lock")).unwrap();
    let name = root.name("Local\\alloc-wait");
    let s = o.create_stream(&name, 1 << 16, 64).unwrap();
    let mut tx = s.sender().unwrap();
    let mut rx = s.receiver().unwrap();
    // Another thread owns the mutex throughout, so that it is never the one taken.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let owner = std::thread::spawn({
        let lock = o.open_mutex(&root.name("Local\\alloc-lock")).unwrap();
        move || {
            let guard = lock.lock().unwrap();
            held_tx.send(()).unwrap();
            done_rx.recv().unwrap();
            drop(guard);
        }
    });
    held_rx.recv().unwrap();
    // Waits for the next message (number `i`) and receives it.
    let mut next = |i: u64| {
        let got = filemap::wait_any(&[&quit, &sem, &lock, &rx], Some(Duration::from_secs(5)));
        assert_eq!(got.unwrap(), filemap::WaitOutcome::Signalled(3));
        let mut buf = [0u8; 8];
        rx.try_recv()
            .unwrap()
            .unwrap()
            .read_at(0, &mut buf)
            .unwrap();
        assert_eq!(u64::from_le_bytes(buf), i);
    };
    assert_no_allocation("a message there already", |i| {
        tx.send(&i.to_le_bytes()).unwrap();
        next(i);
    });
    // A sender on another thread (its allocations are its own): the wait sleeps, as far
    // as the timing goes, until the message comes.
    let sender = std::thread::spawn(move || {
        for i in 0..=40u64 {
            std::thread::sleep(Duration::from_millis(1));
            tx.send(&i.to_le_bytes()).unwrap();
        }
    });
    let mut before = 0;
    for i in 0..=40u64 {
        next(i);
        if i == 0 {
            // The first sleep may set up what later ones reuse (on Windows, the
            // channel's semaphore): count from the second.
            before = allocations();
        }
    }
    let n = allocations() - before;
    sender.join().unwrap();
    done_tx.send(()).unwrap();
    owner.join().unwrap();
    assert_eq!(n, 0, "{n} allocations in 40 sleeping waits");
}
