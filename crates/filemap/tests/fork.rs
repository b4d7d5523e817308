//! A child that `fork`s without `exec` inherits copies of its parent's handles. Closing
//! them in the child (or exiting through destructors) must leave the parent's holds alone:
//! its names, its mutex, its channel roles and the channel's open ends, as closing a
//! handle in one process never affects another process's handle on Windows.
//!
//! The forking runs in a child role (this test binary re-run), so that the process that
//! forks runs one test only.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{opts, read_line_within, role, spawn_role, watchdog, Reap, TestRoot};
use filemap::{Access, Error};

/// The entry point of the child role. In the parent test run it does nothing.
#[test]
fn child() {
    let Some((role, _)) = role() else { return };
    let result = match role.as_str() {
        "fork" => forked_copies_close(),
        "fork-busy" => forks_while_another_thread_opens(),
        "fork-use" => inherited_ends_are_refused(),
        other => Err(format!("unknown role {other}")),
    };
    let report = match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => e,
    };
    let mut o = std::io::stdout().lock();
    writeln!(o, "{}{report}", common::REPORT).unwrap();
    o.flush().unwrap();
    drop(o);
    std::process::exit(0);
}

/// Makes one object of each family, forks a child that drops its copies and exits, and
/// checks that all of them are still the parent's. `Err` says what went wrong.
fn forked_copies_close() -> Result<(), String> {
    let o = opts();
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: Error| format!("{what}: {err}")
    };
    let m = o.create("Local\\fork-map", 4096).map_err(e("create"))?;
    let v = m.map_view(Access::ReadWrite, 0, 0).map_err(e("view"))?;
    v.write_at(0, b"parent").map_err(e("write"))?;
    let ev = o
        .create_event("Local\\fork-event", true, false)
        .map_err(e("event"))?;
    let mx = o.create_mutex("Local\\fork-mutex").map_err(e("mutex"))?;
    let st = o
        .create_stream("Local\\fork-stream", 4096, 64)
        .map_err(e("stream"))?;
    let mut tx = st.sender().map_err(e("sender"))?;
    let mut rx = st.receiver().map_err(e("receiver"))?;

    // SAFETY: this process runs one test, on one thread besides the harness's main thread
    // (which waits for it) and the mutex's sentinel; the child only drops handles (closes,
    // munmaps and frees, which glibc's fork handlers make safe) and calls `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop((tx, rx, st, mx, ev, v, m));
        // SAFETY: ends the child at once, without running the harness's exit path.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid place for its status.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid || status != 0 {
        return Err(format!("the forked child ended with status {status:#x}"));
    }

    // Every name is still there, and still the parent's.
    let again = o
        .open("Local\\fork-map", Access::Read)
        .map_err(e("the mapping after the child closed its copy"))?;
    let mut buf = [0u8; 6];
    again
        .map_view(Access::Read, 0, 6)
        .and_then(|w| w.read_at(0, &mut buf))
        .map_err(e("reading it"))?;
    if &buf != b"parent" {
        return Err(format!("the mapping reads {buf:?}"));
    }
    o.open_event("Local\\fork-event")
        .map_err(e("the event after the child closed its copy"))?;
    o.open_mutex("Local\\fork-mutex")
        .map_err(e("the mutex after the child closed its copy"))?;
    drop(mx.lock().map_err(e("locking the mutex"))?);
    // The stream's ends are still open and still ours: no other sender may take the role,
    // and the receiver does not see the sender closed.
    match st.sender() {
        Err(Error::Busy { .. }) => {}
        other => return Err(format!("a second sender: {other:?}")),
    }
    match rx.try_recv() {
        Ok(None) => {}
        Err(err) => return Err(format!("receiving from an empty stream: {err}")),
        Ok(Some(_)) => return Err("a message nobody sent".into()),
    }
    tx.send(b"after the fork").map_err(e("send"))?;
    drop(tx);
    let msg = rx
        .try_recv()
        .map_err(e("receive"))?
        .ok_or("no message after the fork")?;
    let mut got = vec![0u8; msg.len()];
    msg.read_at(0, &mut got).map_err(e("reading the message"))?;
    drop(msg);
    if got != b"after the fork" {
        return Err(format!("received {got:?}"));
    }

    // The parent's own last handles still take the names with them.
    drop((again, rx, st, ev, v, m));
    match o.open("Local\\fork-map", Access::Read) {
        Err(Error::NotFound { .. }) => Ok(()),
        other => Err(format!("after the parent's last close: {other:?}")),
    }
}

/// Makes one end of each channel role, forks a child that tries to use its copies, and
/// checks the parent's ends afterwards. The roles are the parent's (they belong to the
/// open file descriptions that parent and child share), so every end that sends, takes
/// messages from a stream, serves or calls refuses in the child (`InvalidArgument`): two
/// processes in one role would lose or tear messages. Broadcast subscribers and
/// latest-value readers only read, and work in both.
fn inherited_ends_are_refused() -> Result<(), String> {
    let o = opts();
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: Error| format!("{what}: {err}")
    };
    let st = o
        .create_stream("Local\\use-stream", 4096, 64)
        .map_err(e("stream"))?;
    let mut tx = st.sender().map_err(e("sender"))?;
    let mut rx = st.receiver().map_err(e("receiver"))?;
    let bc = o
        .create_broadcast("Local\\use-broadcast", 8, 64)
        .map_err(e("broadcast"))?;
    let mut publisher = bc.publisher().map_err(e("publisher"))?;
    let mut subscriber = bc.subscriber().map_err(e("subscriber"))?;
    let lt = o
        .create_latest("Local\\use-latest", 64)
        .map_err(e("latest"))?;
    let mut writer = lt.writer().map_err(e("writer"))?;
    let mut reader = lt.reader().map_err(e("reader"))?;
    let rr = o
        .create_request_reply("Local\\use-rpc", 2, 64, 64)
        .map_err(e("request/reply"))?;
    let mut server = rr.server().map_err(e("server"))?;
    let mut client = rr.client().map_err(e("client"))?;
    let replier = server.replier();
    publisher.send(b"before").map_err(e("publishing"))?;
    client.send_request(b"before").map_err(e("a request"))?;
    let mut buf = Vec::new();
    let taken = server
        .recv(&mut buf, Some(Duration::from_secs(10)))
        .map_err(e("taking the request"))?;
    writer.publish(b"value").map_err(e("writing a value"))?;

    // SAFETY: this process runs one test, on one thread besides the harness's main thread
    // (which waits for it); the child only makes calls that fail or read shared memory,
    // drops handles, and calls `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let refused = |r: Result<(), Error>| matches!(r, Err(Error::InvalidArgument { .. }));
        let mut buf = Vec::new();
        let checks = [
            refused(tx.send(b"child")),
            matches!(
                tx.try_send(b"child"),
                Err(filemap::TrySendError::Failed(Error::InvalidArgument { .. }))
            ),
            refused(tx.loan(5).map(drop)),
            refused(tx.send_all([&b"child"[..]]).map(drop)),
            refused(rx.try_recv().map(drop)),
            refused(rx.recv_batch(8, |_| {}).map(drop)),
            refused(publisher.send(b"child")),
            refused(writer.publish(b"child")),
            refused(server.recv(&mut buf, Some(Duration::ZERO)).map(drop)),
            refused(client.send_request(b"child")),
            refused(replier.reply(taken, b"child").map(drop)),
            matches!(subscriber.try_recv(&mut buf), Ok(Some(0))) && buf == b"before",
            matches!(reader.read(&mut buf), Ok(Some(1))) && buf == b"value",
        ];
        let failed = checks
            .iter()
            .position(|ok| !ok)
            .map_or(0, |i| 10 + i as i32);
        drop((
            tx, rx, publisher, subscriber, writer, reader, server, client,
        ));
        // SAFETY: ends the child at once, without running the harness's exit path.
        unsafe { libc::_exit(failed) };
    }
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid place for its status.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!(
            "in the child, check {} of the list failed (status {status:#x})",
            libc::WEXITSTATUS(status) - 10
        ));
    }

    // The parent's ends work, and nothing of the child's reached the channels.
    tx.send(b"parent").map_err(e("send"))?;
    let msg = rx
        .try_recv()
        .map_err(e("receive"))?
        .ok_or("no message from the parent")?;
    let got = msg.to_vec();
    drop(msg);
    if got != b"parent" {
        return Err(format!("the stream delivered {got:?} first"));
    }
    let mut buf = Vec::new();
    match subscriber.try_recv(&mut buf) {
        Ok(Some(0)) if buf == b"before" => {}
        other => return Err(format!("the parent's subscriber: {other:?} {buf:?}")),
    }
    match subscriber.try_recv(&mut buf) {
        Ok(None) => {}
        other => return Err(format!("the broadcast after the child: {other:?} {buf:?}")),
    }
    match reader.read(&mut buf) {
        Ok(Some(1)) if buf == b"value" => {}
        other => {
            return Err(format!(
                "the latest value after the child: {other:?} {buf:?}"
            ))
        }
    }
    client.send_request(b"ping").map_err(e("request"))?;
    let ticket = server
        .recv(&mut buf, Some(Duration::from_secs(10)))
        .map_err(e("serving"))?;
    if buf != b"ping" {
        return Err(format!("the server got {buf:?}"));
    }
    server.reply(ticket, b"pong").map_err(e("reply"))?;
    client
        .wait_reply(&mut buf, Some(Duration::from_secs(10)))
        .map_err(e("reply"))?;
    if buf != b"pong" {
        return Err(format!("the client got {buf:?}"));
    }
    Ok(())
}

/// Runs `role` in a child process of its own and checks that it reports "ok" within
/// `secs` seconds.
fn role_reports_ok(role: &str, secs: u64) {
    let _w = watchdog(secs + 60);
    let root = TestRoot::new(role);
    let mut kid = Reap(spawn_role("child", role, &root.path, &[]));
    let report = read_line_within(&mut kid.0, Duration::from_secs(secs));
    assert_eq!(report, "ok");
    assert!(kid.0.wait().unwrap().success());
}

#[test]
fn a_forked_childs_copies_leave_the_parents_handles_alone() {
    role_reports_ok("fork", 60);
}

#[test]
fn a_forked_child_cannot_use_the_channel_ends_it_inherited() {
    role_reports_ok("fork-use", 60);
}

/// Forks again and again while another thread opens and closes handles and maps and
/// unmaps views of a mapping, and has every child make an object of its own, map a view of
/// the inherited mapping and drop an inherited view: a lock that the other thread held at
/// the fork (the namespace directories' cache, the holders' slots, the mapping's list of
/// views) must not be left held in the child.
fn forks_while_another_thread_opens() -> Result<(), String> {
    let o = opts();
    let shared = o
        .create("Local\\shared", 4096)
        .map_err(|e| format!("create: {e}"))?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(m) = o.open_or_create("Local\\busy", 4096) {
                    drop(m);
                }
                if let Ok(v) = shared.map_view(Access::ReadWrite, 0, 0) {
                    drop(v);
                }
            }
        });
        let result = (0..FORKS).try_for_each(|i| {
            let inherited = shared
                .map_view(Access::Read, 0, 0)
                .map_err(|e| format!("view: {e}"))?;
            let inherited = std::cell::Cell::new(Some(inherited));
            // SAFETY: the child only makes and drops an object and views (open, lock, mmap,
            // close and malloc, which glibc's fork handlers make safe) and calls `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                drop(inherited.take());
                let ok = o.create(&format!("Local\\child-{i}"), 4096).is_ok()
                    && shared.map_view(Access::ReadWrite, 0, 0).is_ok();
                // SAFETY: ends the child at once, without the harness's exit path.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            drop(inherited.take());
            if pid < 0 {
                return Err(format!("fork: {}", std::io::Error::last_os_error()));
            }
            let start = Instant::now();
            loop {
                let mut status = 0;
                // SAFETY: polls our own child; `status` is a valid place for its status.
                match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
                    0 if start.elapsed() < Duration::from_secs(10) => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    0 => {
                        // SAFETY: kills and reaps our own child.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                            libc::waitpid(pid, &mut status, 0);
                        }
                        return Err(format!("forked child {i} hung"));
                    }
                    _ if status == 0 => return Ok(()),
                    _ => return Err(format!("forked child {i} ended with status {status:#x}")),
                }
            }
        });
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// Forks of [`forks_while_another_thread_opens`].
const FORKS: u32 = 300;

#[test]
fn a_child_forked_while_another_thread_opens_objects_can_make_its_own() {
    role_reports_ok("fork-busy", 240);
}
