//! The `filemap` command, run as real processes: the sample's server and client, the demo,
//! signals, SIGKILL, Python attaching by path, other users, and bad input.
// The Linux backend; tests/windows.rs is the Windows suite, run under Wine in CI.
#![cfg(target_os = "linux")]
// Test output may panic on a closed pipe; only the command itself must not.
#![allow(clippy::disallowed_macros)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_filemap");
const PROMPT: &str = "Press ENTER to clean up resources and quit";
const TIMEOUT: Duration = Duration::from_secs(20);

/// A namespace root of the test's own, removed at the end.
struct Root(PathBuf);

static N: AtomicUsize = AtomicUsize::new(0);

impl Root {
    fn new(tag: &str) -> Root {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = PathBuf::from(format!(
            "/dev/shm/filemap-clitest-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        Root(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(EXE);
        c.args(args).env("FILEMAP_ROOT", &self.0);
        c
    }

    /// Runs to completion with empty stdin, under a watchdog.
    fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args).stdin(Stdio::null()))
    }

    /// The NAME column of `ls ARGS...` (which must succeed), in order.
    fn listed(&self, args: &[&str]) -> Vec<String> {
        let o = self.run(&[&["ls"][..], args].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect()
    }

    fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.cmd(args))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The user running the tests as `ls` and `info` show owners: the name, or the uid of a
/// user without one.
fn me() -> String {
    let id = |arg: &str| {
        let out = Command::new("id").arg(arg).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    id("-un").or_else(|| id("-u")).unwrap()
}

/// Kills process `pid` after the timeout, or when the returned sender is dropped, unless
/// told first that it is done (send `()`).
fn watchdog(pid: u32) -> mpsc::Sender<()> {
    watchdog_after(pid, TIMEOUT)
}

/// As [`watchdog`], after `limit`.
fn watchdog_after(pid: u32, limit: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    tx
}

fn run_with_timeout(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = watchdog(child.id());
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A long-running filemap process (server, client, create) with piped stdio.
struct Proc {
    child: Child,
    out: mpsc::Receiver<u8>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while let Ok(1) = stdout.read(&mut b) {
                if tx.send(b[0]).is_err() {
                    break;
                }
            }
        });
        Proc { child, out }
    }

    /// Everything printed up to and including `marker`; fails after the timeout.
    fn read_until(&mut self, marker: &str) -> String {
        let mut text = Vec::new();
        while !text.ends_with(marker.as_bytes()) {
            match self.out.recv_timeout(TIMEOUT) {
                Ok(b) => text.push(b),
                Err(_) => panic!(
                    "no {marker:?} from pid {} (got {:?})",
                    self.child.id(),
                    String::from_utf8_lossy(&text)
                ),
            }
        }
        String::from_utf8(text).unwrap()
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    fn press_enter(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    }

    /// Waits for exit under the watchdog; returns the status and what was on stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let done = watchdog(self.child.id());
        let status = self.child.wait().unwrap();
        let _ = done.send(());
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (status, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SERVER_OUT: &str = "The file mapping (Local\\SampleMap) is created\n\
The file view is mapped\n\
This message is written to the view:\n\
\"Message from the first process.\"\n\
Press ENTER to clean up resources and quit";

const CLIENT_OUT: &str = "The file mapping (Local\\SampleMap) is opened\n\
The file view is mapped\n\
Read from the file mapping:\n\
\"Message from the first process.\"\n\
Press ENTER to clean up resources and quit";

#[test]
fn server_and_client_print_the_samples_lines() {
    let root = Root::new("pair");
    let mut server = root.spawn(&["server"]);
    assert_eq!(server.read_until(PROMPT), SERVER_OUT);
    let mut client = root.spawn(&["client"]);
    assert_eq!(client.read_until(PROMPT), CLIENT_OUT);
    // The mapping is 64 KiB and holds the UTF-16LE message with its NUL: 64 bytes.
    let hex = root.run(&["read", "Local\\SampleMap", "--len", "66", "--format", "raw"]);
    let mut expected: Vec<u8> = "Message from the first process."
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    expected.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(hex.stdout, expected);
    let info = stdout(&root.run(&["info", "Local\\SampleMap", "--json"]));
    assert!(info.contains("\"size\":65536"), "{info}");
    client.press_enter();
    let (status, err) = client.finish();
    assert!(status.success(), "{err}");
    server.press_enter();
    let (status, err) = server.finish();
    assert!(status.success(), "{err}");
    let after = root.run(&["client"]);
    assert_eq!(
        stderr(&after),
        "The process throws the error: no mapping named Local\\SampleMap\n"
    );
    assert_eq!(after.status.code(), Some(1));
}

#[test]
fn server_and_client_options() {
    let root = Root::new("options");
    let mut server = root.spawn(&[
        "server",
        "--name",
        "Global\\custom map",
        "--size",
        "8K",
        "--view-offset",
        "5000",
        "--view-size",
        "0",
        "--message",
        "héllo wörld",
        "--encoding",
        "utf8",
    ]);
    let out = server.read_until(PROMPT);
    assert!(
        out.starts_with("The file mapping (Global\\custom map) is created\n"),
        "{out}"
    );
    assert!(out.contains("\"héllo wörld\"\n"), "{out}");
    let mut client = root.spawn(&[
        "client",
        "--name",
        "Global\\custom map",
        "--view-offset",
        "5000",
        "--encoding",
        "utf8",
    ]);
    let out = client.read_until(PROMPT);
    assert!(
        out.contains("Read from the file mapping:\n\"héllo wörld\"\n"),
        "{out}"
    );
    // The bytes are at offset 5000 of an 8 KiB mapping, NUL-terminated.
    assert_eq!(
        root.run(&[
            "read",
            "Global\\custom map",
            "--offset",
            "5000",
            "--len",
            "14",
            "--format",
            "raw"
        ])
        .stdout,
        "héllo wörld\0".as_bytes()
    );
    assert!(stdout(&root.run(&["info", "Global\\custom map", "--json"])).contains("\"size\":8192"));
    // A client with the default encoding reads the same bytes as UTF-16: not our message.
    let mut wrong = root.spawn(&[
        "client",
        "--name",
        "Global\\custom map",
        "--view-offset",
        "5000",
    ]);
    assert!(!wrong.read_until(PROMPT).contains("héllo"));
    for p in [&mut wrong, &mut client, &mut server] {
        p.press_enter();
    }
    for p in [wrong, client, server] {
        assert!(p.finish().0.success());
    }
}

#[test]
fn client_without_a_server_fails_in_plain_words() {
    let root = Root::new("noserver");
    let out = root.run(&["client"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "The process throws the error: no mapping named Local\\SampleMap\n"
    );
}

#[test]
fn server_and_client_clean_up_on_enter_eof_and_signals() {
    let root = Root::new("stops");
    for (i, how) in ["enter", "eof", "-INT", "-TERM", "-HUP"]
        .into_iter()
        .enumerate()
    {
        let name = format!("Local\\stop{i}");
        let mut server = root.spawn(&["server", "--name", &name]);
        server.read_until(PROMPT);
        let mut client = root.spawn(&["client", "--name", &name]);
        client.read_until(PROMPT);
        for p in [&mut client, &mut server] {
            match how {
                "enter" => p.press_enter(),
                "eof" => drop(p.child.stdin.take()),
                sig => p.signal(sig),
            }
        }
        for p in [client, server] {
            let (status, err) = p.finish();
            assert_eq!(status.code(), Some(0), "{how}: {status} {err}");
        }
        let out = root.run(&["read", &name]);
        assert_eq!(
            stderr(&out),
            format!("filemap: no mapping named {name}\n"),
            "{how}"
        );
    }
    // Nothing stale either: every holder closed properly.
    assert_eq!(stdout(&root.run(&["gc"])), "0 stale object(s) removed\n");
}

#[test]
fn demo_runs_the_server_and_the_client_as_two_processes() {
    let root = Root::new("demo");
    let out = root.run(&["demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in SERVER_OUT.lines() {
        assert!(text.contains(&format!("[server] {line}\n")), "{text}");
    }
    for line in CLIENT_OUT.lines() {
        assert!(text.contains(&format!("[client] {line}\n")), "{text}");
    }
    assert!(
        text.ends_with("[demo] both processes closed Local\\SampleMap, so it no longer exists\n"),
        "{text}"
    );
}

#[test]
fn sigkill_of_server_and_client_leaves_nothing_behind() {
    let root = Root::new("kill9");
    let mut server = root.spawn(&["server", "--name", "k"]);
    server.read_until(PROMPT);
    let mut client = root.spawn(&["client", "--name", "k"]);
    client.read_until(PROMPT);
    let ls = stdout(&root.run(&["ls"]));
    assert!(ls.contains("Local\\k ") && ls.contains(" live "), "{ls}");
    for p in [&client, &server] {
        p.signal("-KILL");
    }
    for p in [client, server] {
        let (status, _) = p.finish();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
    let ls = stdout(&root.run(&["ls", "--json"]));
    assert!(ls.contains("\"state\":\"stale\""), "{ls}");
    let out = root.run(&["client", "--name", "k"]);
    assert_eq!(
        stderr(&out),
        "The process throws the error: no mapping named Local\\k\n"
    );
    // The open reclaimed the mapping; the server's ready event goes with the next gc.
    let ls = stdout(&root.run(&["ls", "--json"]));
    assert!(
        ls.starts_with("[{\"name\":\"Local\\\\k.ready\",\"kind\":\"event\""),
        "{ls}"
    );
    assert!(ls.contains("\"state\":\"stale\""), "{ls}");
    assert_eq!(
        stdout(&root.run(&["gc"])),
        "removed Local\\k.ready\n1 stale object(s) removed\n"
    );
    assert_eq!(stdout(&root.run(&["ls", "--json"])), "[]\n");
}

/// Attaches the way the README tells other languages to: open, read lock on the holder's
/// byte, check the name, check for other holders, mmap; then shows up in `info`.
const PYTHON_ATTACH: &str = r#"
import fcntl, json, mmap, os, struct, subprocess, sys
exe, name = sys.argv[1], sys.argv[2]
info = json.loads(subprocess.check_output([exe, "info", name, "--json"]))
path, size = info["os_path"], info["size"]
def lock(kind, start, length):  # struct flock: type, whence, start, len, pid
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)
HOLDERS = 2**40                 # holders' range: from here to the end (length 0)
mine = HOLDERS + os.getpid() * 65536 + 65535
fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock(fcntl.F_RDLCK, mine, 1))
if os.stat(path).st_ino != os.fstat(fd).st_ino:
    sys.exit("gone: the name points at another object now")
held = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, lock(fcntl.F_WRLCK, HOLDERS, 0))
if struct.unpack("h", held[:2])[0] == fcntl.F_UNLCK:
    sys.exit("stale: nobody else holds it")
again = json.loads(subprocess.check_output([exe, "info", name, "--json"]))
assert os.getpid() in again["holders"] and again["handles"] == 2, again
m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
raw = m[:1024]
end = next(i for i in range(0, len(raw), 2) if raw[i:i+2] == b"\0\0")
print(raw[:end].decode("utf-16-le"))
"#;

#[test]
fn python_attaches_by_os_path_and_reads_the_message() {
    let root = Root::new("python");
    let mut server = root.spawn(&["server", "--name", "Local\\py map"]);
    server.read_until(PROMPT);
    let out = run_with_timeout(
        Command::new("python3")
            .args(["-c", PYTHON_ATTACH, EXE, "Local\\py map"])
            .env("FILEMAP_ROOT", &root.0)
            .stdin(Stdio::null()),
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "Message from the first process.\n");
    server.press_enter();
    assert!(server.finish().0.success());
}

/// A stream consumer written from docs/channels.md alone, in plain Python (no filemap
/// package): it joins as a holder, takes the consumer's role, reads frames (skip frames
/// too), gives the room back and wakes the producer with a futex, and stops when the
/// producer has closed and everything is read. Aligned 4- and 8-byte loads and stores are
/// single accesses on x86-64, whose order they keep, which is what the protocol's acquire
/// and release ask for; the shared words go through `ctypes` integers for that (`struct`
/// reads and writes them a byte at a time, so another process could see half a store). The
/// waker's fence is left out, so the producer is woken after every release, whatever its
/// flag says.
const PYTHON_STREAM_CONSUMER: &str = r#"
import ctypes, fcntl, json, mmap, os, platform, struct, subprocess, sys, time
exe, name = sys.argv[1], sys.argv[2]
info = json.loads(subprocess.check_output([exe, "info", name, "--json"]))
assert info["kind"] == "stream", info
path, size = info["os_path"], info["size"]
def lock(kind, start, length):  # struct flock: type, whence, start, len, pid
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)
fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock(fcntl.F_RDLCK, 2**40 + os.getpid() * 65536 + 65535, 1))
if os.stat(path).st_ino != os.fstat(fd).st_ino:
    sys.exit("gone: the name points at another object now")
role = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)  # the role's own description
fcntl.fcntl(role, fcntl.F_OFD_SETLK, lock(fcntl.F_WRLCK, 2**39 + 1, 1))  # role 1: consumer
m = mmap.mmap(fd, size)
# One load or store per word (struct would move bytes one at a time).
def u32(off): return ctypes.c_uint32.from_buffer(m, off).value
def put32(off, v): ctypes.c_uint32.from_buffer(m, off).value = v
magic, version, kind, capacity, max_message = struct.unpack_from("<8sIIII", m, 0)
assert (magic, version, kind) == (b"filemapC", 2, 1), (magic, version, kind)
RING, TAIL, PRODUCER, HEAD, CONSUMER, RECEIVED = 4096, 128, 132, 256, 260, 272
put32(CONSUMER + 4, os.getpid())
put32(CONSUMER, 1)  # connected
SYS_futex = {"x86_64": 202, "aarch64": 98}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
head_word = ctypes.c_uint32.from_buffer(m, HEAD)
received_word = ctypes.c_uint64.from_buffer(m, RECEIVED)
def release(head, received):
    received_word.value = received
    head_word.value = head
    libc.syscall(SYS_futex, ctypes.byref(head_word), 1, 2**31 - 1, None, None, 0)  # FUTEX_WAKE
out = sys.stdout.buffer
out.write(b"ready\n")
out.flush()
head, received, skips = u32(HEAD), received_word.value, 0
while True:
    tail = u32(TAIL)
    if tail == head:
        if u32(PRODUCER) == 2 and u32(TAIL) == head:
            break  # closed, and every message read
        time.sleep(0.0002)
        continue
    assert (tail - head) % 2**32 <= capacity, (head, tail)
    while head != tail:
        off = head % capacity
        n = u32(RING + off)
        if n == 0xFFFFFFFF:  # skip frame: the rest of the ring
            head, skips = (head + capacity - off) % 2**32, skips + 1
            continue
        frame = 8 + (n + 7) // 8 * 8
        assert n <= max_message and frame <= capacity - off, (n, off)
        out.write(m[RING + off + 8 : RING + off + 8 + n])
        head, received = (head + frame) % 2**32, received + 1
    release(head, received)
put32(CONSUMER, 2)  # closed cleanly
out.flush()
sys.stderr.write(f"{received} messages, {skips} skip frames\n")
del head_word, received_word
"#;

#[test]
fn python_speaks_the_stream_protocol_from_the_docs() {
    let root = Root::new("pystream");
    let name = "Local\\py stream";
    let made = root.run(&[
        "create",
        name,
        "--kind",
        "stream",
        "--capacity",
        "4096",
        "--max-message",
        "300",
        "--persistent",
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PYTHON_STREAM_CONSUMER, EXE, name])
        .env("FILEMAP_ROOT", &root.0);
    let mut consumer = Proc::spawn(cmd);
    assert_eq!(consumer.read_until("ready\n"), "ready\n");
    // 3,000 lines of 1 to 290 bytes: about 100 laps of the 4 KiB ring, with skip frames.
    let mut input = Vec::new();
    for i in 0..3000usize {
        let len = i * 37 % 290;
        input.extend((0..len).map(|j| b'a' + ((i + j) % 26) as u8));
        input.push(b'\n');
    }
    let mut send = root
        .cmd(&["send", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    let feed = input.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(&feed));
    let done = watchdog(send.id());
    let sent = send.wait_with_output().unwrap();
    let _ = done.send(());
    let fed = feeder.join().unwrap();
    assert!(sent.status.success(), "{}", stderr(&sent));
    fed.unwrap();
    let mut got = Vec::new();
    loop {
        match consumer.out.recv_timeout(TIMEOUT) {
            Ok(b) => got.push(b),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!(
                "the consumer stopped writing ({e:?}) after {} bytes",
                got.len()
            ),
        }
    }
    let (status, err) = consumer.finish();
    assert!(status.success(), "{err}");
    assert!(err.starts_with("3000 messages, "), "{err}");
    assert!(
        !err.starts_with("3000 messages, 0 skip"),
        "no skip frame was read: {err}"
    );
    assert!(
        got == input,
        "{} bytes came through, {} went in",
        got.len(),
        input.len()
    );
    // The consumer's clean close is what `info` reports.
    let info = stdout(&root.run(&["info", name, "--json"]));
    assert!(info.contains("\"queued\":0"), "{info}");
    assert!(root.run(&["rm", name]).status.success());
}

/// Runs `filemap bench --quick --size 64 --test TEST --json` under a watchdog: its pid,
/// its output, and the rows it printed.
fn quick_bench_json(test: &str) -> (u32, std::process::Output, serde_json::Value) {
    let child = Command::new(EXE)
        .args(["bench", "--quick", "--size", "64", "--test", test, "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Busy-polling pairs of processes on a machine that runs other tests too: generous.
    let done = watchdog_after(pid, Duration::from_secs(300));
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = serde_json::from_slice(&out.stdout).unwrap();
    (pid, out, rows)
}

/// `filemap bench --size 64 --test latency` measures the round trips of every contender in
/// rounds, and states each ratio's baseline: the raw atomic ping-pong, or for the idle
/// rows the raw futex ping-pong, idle.
#[test]
fn bench_latency_rows_name_their_baselines() {
    let (pid, out, rows) = quick_bench_json("latency");
    let rows = rows.as_array().unwrap();
    let (atomic, idle) = ("raw atomic ping-pong + copies", "raw futex ping-pong, idle");
    let expected = [
        (atomic, atomic),
        ("raw futex ping-pong + copies", atomic),
        ("pipe", atomic),
        ("Unix socket", atomic),
        ("filemap stream, busy-poll", atomic),
        ("filemap stream, default (spin, then park)", atomic),
        (idle, idle),
        ("filemap stream, default, idle", idle),
    ];
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["contender"].as_str().unwrap(),
                r["baseline"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected, "{}", stdout(&out));
    for r in rows {
        assert_eq!(r["test"], "latency", "{r}");
        assert_eq!(r["size"], 64, "{r}");
        let (median, tail) = (r["median"].as_f64().unwrap(), r["tail"].as_f64().unwrap());
        assert!(median > 0.0 && tail >= median, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
        if r["contender"] == r["baseline"] {
            assert_eq!(r["ratio"], 1.0, "{r}");
        }
    }
    // A millisecond apart, an idle round trip sleeps; back to back, a busy-polling one
    // does not: their medians cannot be the same (lower bound only: the idle one takes
    // a futex wake, which is microseconds at the least).
    let median = |name: &str| {
        rows.iter().find(|r| r["contender"] == name).unwrap()["median"]
            .as_f64()
            .unwrap()
    };
    assert!(median(idle) > median(atomic), "{}", stdout(&out));
    assert!(!Path::new(&format!("/dev/shm/filemap-bench-{pid}")).exists());
    assert!(!Path::new(&format!("/tmp/filemap-bench-{pid}.sock")).exists());
}

/// `filemap bench --size 64 --test throughput` measures those rows and no others, against
/// the raw ring of the same rounds, and leaves nothing behind; bad choices are one-line
/// errors.
#[test]
fn bench_measures_only_the_sizes_and_tests_asked_for() {
    let (pid, out, rows) = quick_bench_json("throughput");
    let rows = rows.as_array().unwrap();
    let contenders: Vec<&str> = rows
        .iter()
        .map(|r| r["contender"].as_str().unwrap())
        .collect();
    assert_eq!(
        contenders,
        [
            "raw SPSC ring",
            "pipe",
            "Unix socket",
            "filemap stream, copied",
            "filemap stream, zero-copy",
            "filemap stream, batched (64)",
            "raw SPSC ring, 72-byte slots (a stream frame's stride)",
            "raw SPSC ring, 72-byte slots with a length header",
            "filemap stream, typed (`[u64; 8]` values)",
            "raw SPSC ring, size known when compiling",
        ],
        "{}",
        stdout(&out)
    );
    for r in rows {
        assert_eq!(r["test"], "throughput", "{r}");
        assert_eq!(r["size"], 64, "{r}");
        assert!(r["median"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(rows[0]["ratio"], 1.0);
    assert!(rows.iter().all(|r| r["baseline"] == "raw SPSC ring"));
    // Its own namespace root and socket are gone.
    assert!(!Path::new(&format!("/dev/shm/filemap-bench-{pid}")).exists());
    assert!(!Path::new(&format!("/tmp/filemap-bench-{pid}.sock")).exists());
    for bad in [&["--size", "100"][..], &["--test", "speed"]] {
        let out = run_with_timeout(Command::new(EXE).arg("bench").args(bad));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(bad[0]) && err.contains(bad[1]), "{err}");
    }
}

/// `ls PREFIX` lists only the names that begin with PREFIX: with its namespace's prefix, in
/// that namespace; without one, in both. Table and JSON alike.
#[test]
fn ls_takes_a_name_prefix() {
    let root = Root::new("ls-prefix");
    for (name, kind) in [
        ("Local\\app-a", "event"),
        ("Local\\app-b", "semaphore"),
        ("Global\\app-c", "event"),
        ("Local\\other", "event"),
    ] {
        let out = root.run(&["create", name, "--kind", kind, "--persistent"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(
        root.listed(&["app-"]),
        ["Local\\app-a", "Local\\app-b", "Global\\app-c"]
    );
    assert_eq!(
        root.listed(&["Local\\app"]),
        ["Local\\app-a", "Local\\app-b"]
    );
    assert_eq!(root.listed(&["Global\\"]), ["Global\\app-c"]);
    assert_eq!(root.listed(&["nothing"]), Vec::<String>::new());
    assert_eq!(root.listed(&[]).len(), 4);
    let json = stdout(&root.run(&["ls", "--json", "Local\\app-b"]));
    assert!(
        json.starts_with("[{\"name\":\"Local\\\\app-b\",\"kind\":\"semaphore\""),
        "{json}"
    );
    assert_eq!(json.matches("\"name\"").count(), 1, "{json}");
    for name in [
        "Local\\app-a",
        "Local\\app-b",
        "Global\\app-c",
        "Local\\other",
    ] {
        assert!(root.run(&["rm", name]).status.success());
    }
}

#[test]
fn create_write_read_ls_info_rm() {
    let root = Root::new("admin");
    // The UTC day, as date(1) tells it (`info` shows the creation time).
    let today = || {
        let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let created_on = today();
    let out = root.run(&[
        "create",
        "Local\\p",
        "--size",
        "100",
        "--persistent",
        "--mode",
        "640",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = root.0.join(format!("local-{}/p", unsafe_free_uid()));
    assert_eq!(
        stdout(&out),
        format!(
            "created mapping Local\\p (100 bytes) at {}\n",
            path.display()
        )
    );
    assert!(root
        .run(&[
            "write",
            "p",
            "--offset",
            "2",
            "--encoding",
            "utf16",
            "--nul",
            "hé"
        ])
        .status
        .success());
    assert_eq!(
        stdout(&root.run(&["read", "p", "--offset", "2", "--format", "utf16"])),
        "hé\n"
    );
    let out = root.run(&["read", "p", "--len", "8"]);
    assert_eq!(
        stdout(&out),
        "00000000  00 00 68 00 e9 00 00 00                          |..h.....|\n"
    );
    // Data from standard input and from a file.
    let mut w = root.cmd(&["write", "p", "--offset", "50"]);
    w.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = w.spawn().unwrap();
    let done = watchdog(child.id());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let _ = done.send(());
    let input = root.0.with_extension("input");
    std::fs::write(&input, b"from file").unwrap();
    assert!(root
        .run(&[
            "write",
            "p",
            "--offset",
            "80",
            "--input",
            input.to_str().unwrap()
        ])
        .status
        .success());
    std::fs::remove_file(&input).unwrap();
    assert_eq!(
        root.run(&["read", "p", "--offset", "50", "--len", "10", "--format", "raw"])
            .stdout,
        b"from stdin"
    );
    assert_eq!(
        stdout(&root.run(&["read", "p", "--offset", "80", "--format", "utf8"])),
        "from file\n"
    );
    // ls and info, as a table and as JSON.
    let ls = stdout(&root.run(&["ls"]));
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "KIND", "SIZE", "OWNER", "MODE", "STATE", "DETAIL", "PATH"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>()[..6],
        ["Local\\p", "mapping", "100", &me(), "0640", "persistent"]
    );
    let json = stdout(&root.run(&["ls", "--json"]));
    for field in [
        "\"name\":\"Local\\\\p\"",
        "\"kind\":\"mapping\"",
        "\"size\":100",
        &format!("\"os_path\":\"{}\"", path.display()),
        "\"mode\":\"0640\"",
    ] {
        assert!(json.contains(field), "{field} in {json}");
    }
    let info = stdout(&root.run(&["info", "p"]));
    assert!(
        info.contains("kind:        mapping\nsize:        100\nstate:       persistent\n"),
        "{info}"
    );
    // The creation time as a UTC date and time, then the seconds: the day it was made
    // (or the next, past a midnight).
    let created = info.lines().find(|l| l.starts_with("created:")).unwrap();
    let day = created.split_whitespace().nth(1).unwrap();
    assert!(
        created.contains(" UTC (") && created.ends_with(" seconds since 1970)"),
        "{created}"
    );
    assert!(day == created_on || day == today(), "{created}");
    assert!(stdout(&root.run(&["info", "p", "--json"]))
        .starts_with("{\"name\":\"Local\\\\p\",\"kind\":\"mapping\",\"size\":100,"));
    // A mapping made by `create` without --persistent lives while the command runs.
    let mut holder = root.spawn(&["create", "Global\\held", "--size", "4K"]);
    holder.read_until("\n");
    assert!(stdout(&root.run(&["ls"])).contains("Global\\held"));
    // Its input stays open until it has ended (`finish` would close it, and the end of
    // input could wake it before the signal does).
    let input = holder.child.stdin.take();
    holder.signal("-TERM");
    let (status, err) = holder.finish();
    drop(input);
    assert!(status.success());
    assert_eq!(
        err,
        "holding Global\\held open; press ENTER (or send SIGINT/SIGTERM, or close input) to close it\n\
         closing Global\\held (SIGTERM)\n"
    );
    assert!(!stdout(&root.run(&["ls"])).contains("Global\\held"));
    // rm removes the persistent one.
    assert!(root.run(&["rm", "p"]).status.success());
    assert_eq!(stdout(&root.run(&["ls", "--json"])), "[]\n");
}

fn unsafe_free_uid() -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
}

#[test]
fn file_backed_create_from_the_cli() {
    let root = Root::new("filecli");
    let file = root.0.with_extension("backing");
    std::fs::write(&file, b"").unwrap();
    let mut holder = root.spawn(&[
        "create",
        "Local\\f",
        "--file",
        file.to_str().unwrap(),
        "--size",
        "32",
    ]);
    holder.read_until("\n");
    assert!(root
        .run(&["write", "f", "--offset", "4", "on disk"])
        .status
        .success());
    holder.press_enter();
    assert!(holder.finish().0.success());
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(&bytes[4..11], b"on disk");
}

#[test]
fn sparse_mappings_from_the_cli() {
    use std::os::unix::fs::MetadataExt;
    let root = Root::new("sparse");
    let out = root.run(&["create", "S", "--size", "1G", "--sparse", "--persistent"]);
    assert!(out.status.success(), "{out:?}");
    let created = stdout(&out);
    let path = created.trim().rsplit(" at ").next().unwrap().to_owned();
    assert!(
        created.starts_with("created mapping Local\\S (1073741824 bytes) at "),
        "{created}"
    );
    assert!(std::fs::metadata(&path).unwrap().blocks() * 512 < 1 << 20);
    let w = root.run(&["write", "S", "--offset", "512M", "far out"]);
    assert!(w.status.success(), "{w:?}");
    let r = root.run(&[
        "read", "S", "--offset", "512M", "--len", "7", "--format", "utf8",
    ]);
    assert_eq!(stdout(&r).trim_end(), "far out");
    let used = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!((4096..1 << 20).contains(&used), "{used}");
    assert!(root.run(&["rm", "S"]).status.success());
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn long_names_from_the_cli() {
    let root = Root::new("longname");
    let long = format!("Global\\{}", "very long name/".repeat(70));
    let out = root.run(&["create", &long, "--size", "64", "--persistent"]);
    assert!(out.status.success(), "{out:?}");
    assert!(root.run(&["write", &long, "hello"]).status.success());
    let r = root.run(&["read", &long, "--format", "utf8", "--len", "5"]);
    assert_eq!(stdout(&r).trim_end(), "hello");
    // ls and info show the whole name, as given.
    let ls = stdout(&root.run(&["ls", "--json"]));
    assert!(
        ls.contains(&format!("\"name\":\"{}\"", long.replace('\\', "\\\\"))),
        "{ls}"
    );
    let info = stdout(&root.run(&["info", &long]));
    assert!(info.contains(&long), "{info}");
    assert!(root.run(&["rm", &long]).status.success());
    let gone = root.run(&["info", &long]);
    assert_eq!(gone.status.code(), Some(1));
    // Past the limit: one line that shows the start of the name.
    let too_long = "y".repeat(40_000);
    let e = root.run(&["create", &too_long, "--size", "1"]);
    assert_eq!(e.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&e.stderr),
        format!(
            "filemap: name '{}…' is too long: 40006 UTF-16 code units, the limit is 32766\n",
            "y".repeat(40)
        )
    );
}

#[test]
fn gc_removes_a_corrupt_object_and_says_so() {
    let root = Root::new("corrupt");
    let out = root.run(&["create", "broken", "--size", "64", "--persistent"]);
    assert!(out.status.success(), "{out:?}");
    let path = stdout(&out)
        .trim()
        .rsplit(" at ")
        .next()
        .unwrap()
        .to_owned();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    let info = root.run(&["info", "broken"]);
    assert_eq!(info.status.code(), Some(1));
    assert_eq!(
        stdout(&root.run(&["gc"])),
        "removed Local\\broken, which was corrupt: it is only 10 bytes long\n0 stale object(s) and 1 corrupt file(s) removed\n"
    );
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn bad_input_gets_one_line_and_a_nonzero_exit() {
    let root = Root::new("badcli");
    assert!(root
        .run(&["create", "P", "--size", "100", "--persistent"])
        .status
        .success());
    let table: &[(&[&str], &str, i32)] = &[
        (&["read", "Bad\\x"], "filemap: invalid name 'Bad\\x': the only prefixes are Local\\ and Global\\", 1),
        (&["read", "Local\\"], "filemap: invalid name 'Local\\': nothing follows the prefix", 1),
        (&["read", "missing"], "filemap: no mapping named Local\\missing", 1),
        (&["rm", "missing"], "filemap: no object named Local\\missing", 1),
        (&["--root", "relative/dir", "ls"], "filemap: invalid argument: the namespace root relative/dir is not an absolute path", 1),
        (&["create", "x", "--size", "0"], "filemap: invalid size: a mapping's size must be greater than 0", 1),
        (&["create", "x"], "filemap: --size is required for a shared-memory mapping", 1),
        (
            &["create", "x", "--size", "abc"],
            "filemap: invalid value 'abc' for '--size <BYTES>': \"abc\" is not a byte count (examples: 65536, 0x10000, 64K)",
            2,
        ),
        (&["create", "x", "--size", "10", "--mode", "755"], "filemap: invalid argument: mode 755: only read and write bits (666) are allowed", 1),
        (&["create", "P", "--size", "10"], "filemap: a mapping named Local\\P already exists", 1),
        (&["read", "P", "--offset", "200"], "filemap: range of 0 bytes at offset 200 does not fit in 100 bytes", 1),
        (&["write", "P", "--offset", "99", "ab"], "filemap: range of 2 bytes at offset 99 does not fit in 100 bytes", 1),
        (&["read", "P", "--format", "base64"], "filemap: invalid value 'base64' for '--format <FORMAT>'", 2),
        (
            &["server", "--view-size", "8"],
            "The process throws the error: the message needs 64 bytes but the view holds only 8",
            1,
        ),
        (
            &["server", "--view-offset", "70000"],
            "The process throws the error: range of 1024 bytes at offset 70000 does not fit in 65536 bytes",
            1,
        ),
        (&["server", "--size", "0"], "The process throws the error: invalid size: a mapping's size must be greater than 0", 1),
        (&["client", "--name", "Session\\1\\x"], "The process throws the error: invalid name 'Session\\1\\x': the only prefixes are Local\\ and Global\\", 1),
        (&["client", "--encoding", "utf32"], "The process throws the error: invalid value 'utf32' for '--encoding <ENCODING>' [possible values: utf16, utf8]", 2),
        // Clap's whole message, in one line: what is missing, and the usage.
        (&["create"], "filemap: the following required arguments were not provided: <NAME> (usage: filemap create <NAME>)", 2),
        (&["lock", "mx"], "filemap: the following required arguments were not provided: <CMD>... (usage: filemap lock <NAME> -- <CMD>...)", 2),
        (&["wait"], "filemap: the following required arguments were not provided: <NAMES>... (usage: filemap wait <NAMES>...)", 2),
        (&["info"], "filemap: the following required arguments were not provided: <NAME> (usage: filemap info <NAME>)", 2),
        (&["write", "x", "--nul"], "filemap: the following required arguments were not provided: <DATA> (usage: filemap write --nul <NAME> <DATA>)", 2),
        (&["read", "P", "--format", "base64"], "filemap: invalid value 'base64' for '--format <FORMAT>' [possible values: raw, hex, utf8, utf16, u8, i8, u16, i16, u32, i32, u64, i64, f32, f64]", 2),
        (&["create", "x", "--bogus"], "filemap: unexpected argument '--bogus' found (tip: to pass '--bogus' as a value, use '-- --bogus'; usage: filemap create <NAME>)", 2),
        (&["client", "--timeout", "1"], "The process throws the error: the following required arguments were not provided: --wait (usage: filemap client --wait --timeout <SECS>)", 2),
        // The sample's words also after the global --root.
        (&["--root", "/nonexistent/filemap-root", "client", "--timeout", "1"], "The process throws the error: the following required arguments were not provided: --wait", 2),
        (&["--root=/nonexistent/filemap-root", "server", "--size", "0"], "The process throws the error: invalid size", 1),
    ];
    for (args, message, code) in table {
        let out = root.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(message),
            "{args:?}:\n got: {err}\nwant: {message}"
        );
    }
    // No arguments at all: the usage, on stderr.
    let out = root.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let usage = stderr(&out);
    assert!(
        usage.contains("Usage: filemap [OPTIONS] <COMMAND>") && usage.contains("Commands:"),
        "{usage}"
    );
    // Nothing was left behind by any of them.
    let ls = stdout(&root.run(&["ls", "--json"]));
    assert_eq!(ls.matches("\"name\"").count(), 1, "{ls}");
    assert!(root.run(&["rm", "P"]).status.success());
}

#[test]
fn a_closed_stdout_does_not_stop_the_work() {
    let root = Root::new("epipe");
    for args in [&["demo"][..], &["gc"], &["ls"], &["init"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = run_with_timeout(root.cmd(args).stdin(Stdio::null()).stdout(writer));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    // Errors too, with stderr closed as well.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = run_with_timeout(
        root.cmd(&["read", "missing"])
            .stdin(Stdio::null())
            .stderr(writer),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&root.run(&["ls", "--json"])), "[]\n");
}

/// Runs filemap as another user, from a copy of the binary that user can execute.
struct OtherUser {
    dir: PathBuf,
}

impl OtherUser {
    fn new() -> Option<OtherUser> {
        if unsafe_free_uid() != 0 || Command::new("setpriv").arg("--version").output().is_err() {
            return None;
        }
        let dir = PathBuf::from(format!(
            "/tmp/filemap-otheruser-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(EXE, dir.join("filemap")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("filemap"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        Some(OtherUser { dir })
    }

    fn cmd(&self, uid: u32, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(self.dir.join("filemap"))
        .args(args)
        .env("FILEMAP_ROOT", root)
        .current_dir("/");
        c
    }

    fn run(&self, uid: u32, root: &Path, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(uid, root, args).stdin(Stdio::null()))
    }

    /// Runs a shell script as `uid`.
    fn sh(&self, uid: u32, script: &str) -> Output {
        run_with_timeout(
            Command::new("setpriv")
                .args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "sh",
                    "-c",
                    script,
                ])
                .current_dir("/")
                .stdin(Stdio::null()),
        )
    }
}

impl Drop for OtherUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const NOBODY: u32 = 65534;

/// A Python that other users may run (a user's own, under a private home, they may not):
/// Debian's, which `.ci/run` installs.
const PYTHON_FOR_OTHERS: &str = "/usr/bin/python3";
const OTHER: u32 = 65533;

#[test]
fn another_user_can_neither_open_nor_squat_a_local_object() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("users");
    let mut server = root.spawn(&["server", "--name", "Local\\secret"]);
    server.read_until(PROMPT);
    // Root's namespace is not nobody's to use, even when it makes the shared root.
    let nobody_first = Root::new("nobodyfirst");
    let out = other.run(NOBODY, &nobody_first.0, &["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Its owner could rename or replace anything in it, sticky bit or not (issue 9): root
    // uses none of it, and makes nothing in it.
    for args in [
        &["create", "Global\\g", "--size", "1", "--persistent"][..],
        &["create", "Local\\l", "--size", "1", "--persistent"],
    ] {
        let out = nobody_first.run(args);
        assert_eq!(
            stderr(&out),
            format!(
                "filemap: refusing to use {}: it is owned by uid {NOBODY} (nobody), which is neither root nor you; root can take it over with `filemap init`\n",
                nobody_first.0.display()
            )
        );
    }
    assert!(!nobody_first.0.join("local-0").exists());
    // Root's init takes both directories over, and then they work for everyone.
    let out = nobody_first.run(&["init"]);
    assert_eq!(
        stdout(&out),
        format!(
            "took over {r}, which was owned by uid {NOBODY} (nobody)\n\
             took over {r}/global, which was owned by uid {NOBODY} (nobody)\n\
             namespace root {r} is ready (Global\\ in {r}/global)\n",
            r = nobody_first.0.display()
        )
    );
    assert!(nobody_first
        .run(&["create", "Local\\l", "--size", "1", "--persistent"])
        .status
        .success());
    // Now nobody can no longer move root's Local\ namespace away.
    let out = other.sh(
        NOBODY,
        &format!("mv {r}/local-0 {r}/stolen", r = nobody_first.0.display()),
    );
    assert!(!out.status.success());
    assert!(nobody_first.0.join("local-0").is_dir());
    // Nobody's Local\ is their own: the name does not exist there.
    let out = other.run(NOBODY, &root.0, &["client", "--name", "Local\\secret"]);
    assert_eq!(
        stderr(&out),
        "The process throws the error: no mapping named Local\\secret\n"
    );
    // Going around the name to the file fails too.
    let file = root.0.join("local-0/secret");
    let direct = run_with_timeout(
        Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "cat",
            ])
            .arg(&file)
            .stdin(Stdio::null()),
    );
    assert!(!direct.status.success());
    assert!(
        stderr(&direct).contains("Permission denied"),
        "{}",
        stderr(&direct)
    );
    // Nor can they put an object into root's namespace.
    let touch = run_with_timeout(
        Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "touch",
            ])
            .arg(root.0.join("local-0/planted"))
            .stdin(Stdio::null()),
    );
    assert!(!touch.status.success());
    server.press_enter();
    assert!(server.finish().0.success());

    // Squatting: another user makes root's Local\ directory before root does. Root refuses
    // to use it and creates nothing.
    let fresh = Root::new("squat");
    let init = fresh.run(&["init"]); // makes the shared root and Global\, not local-0
    assert_eq!(
        stdout(&init),
        format!(
            "namespace root {} is ready (Global\\ in {}/global)\n",
            fresh.0.display(),
            fresh.0.display()
        )
    );
    let mkdir = run_with_timeout(
        Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "mkdir",
                "-m",
                "700",
            ])
            .arg(fresh.0.join("local-0"))
            .stdin(Stdio::null()),
    );
    assert!(mkdir.status.success(), "{}", stderr(&mkdir));
    let out = fresh.run(&["create", "Local\\mine", "--size", "10", "--persistent"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "filemap: refusing to use {}: it is owned by uid {NOBODY}, not by you (uid 0)\n",
            fresh.0.join("local-0").display()
        )
    );
    assert_eq!(
        std::fs::read_dir(fresh.0.join("local-0")).unwrap().count(),
        0
    );
    // Root's init names what it cannot repair, with the command, and removes nothing.
    let out = fresh.run(&["init"]);
    assert!(out.status.success());
    assert_eq!(
        stderr(&out),
        format!(
            "filemap: {p} is owned by uid {NOBODY} (nobody), not the Local namespace of uid 0 (root): remove it with `rm -r {p}`\n",
            p = fresh.0.join("local-0").display()
        )
    );
    assert!(fresh.0.join("local-0").is_dir());
    // A file where global/ should be: init says to remove it.
    let planted = Root::new("plantedglobal");
    assert!(planted.run(&["init"]).status.success());
    std::fs::remove_dir(planted.0.join("global")).unwrap();
    std::fs::write(planted.0.join("global"), b"x").unwrap();
    let out = planted.run(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "filemap: refusing to use {p}: it is not a directory (or it is a symlink); remove it with `rm {p}`, then run `filemap init` again\n",
            p = planted.0.join("global").display()
        )
    );
}

#[test]
fn global_objects_follow_their_mode_across_users() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("global");
    assert!(root.run(&["init"]).status.success());
    // Nobody creates an owner-only Global\ object and one that others may read.
    let mut private = Proc::spawn(other.cmd(
        NOBODY,
        &root.0,
        &["create", "Global\\private", "--size", "16"],
    ));
    private.read_until("\n");
    let mut shared = Proc::spawn(other.cmd(
        NOBODY,
        &root.0,
        &["create", "Global\\shared", "--size", "16", "--mode", "644"],
    ));
    shared.read_until("\n");
    assert!(other
        .run(NOBODY, &root.0, &["write", "Global\\shared", "hello"])
        .status
        .success());

    let out = other.run(OTHER, &root.0, &["read", "Global\\private"]);
    assert_eq!(
        stderr(&out),
        "filemap: permission denied: Global\\private exists, but its permissions do not allow opening it for reading\n"
    );
    let out = other.run(
        OTHER,
        &root.0,
        &["read", "Global\\shared", "--format", "utf8"],
    );
    assert_eq!(stdout(&out), "hello\n", "{}", stderr(&out));
    let out = other.run(OTHER, &root.0, &["write", "Global\\shared", "evil"]);
    assert_eq!(
        stderr(&out),
        "filemap: permission denied: Global\\shared exists, but its permissions do not allow opening it for read-write\n"
    );
    // Nobody else can take the name, or remove it.
    let out = other.run(
        OTHER,
        &root.0,
        &["create", "Global\\shared", "--size", "16", "--persistent"],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = other.run(OTHER, &root.0, &["rm", "Global\\shared"]);
    assert_eq!(
        stderr(&out),
        "filemap: permission denied: Global\\shared belongs to another user\n"
    );
    for p in [&mut private, &mut shared] {
        p.press_enter();
    }
    assert!(private.finish().0.success());
    assert!(shared.finish().0.success());
    assert_eq!(stdout(&root.run(&["ls", "--json"])), "[]\n");
}

#[test]
fn sync_objects_from_the_shell() {
    let root = Root::new("synccli");
    for args in [
        &[
            "create",
            "Local\\jobs",
            "--kind",
            "semaphore",
            "--initial",
            "1",
            "--max",
            "2",
            "--persistent",
        ][..],
        &[
            "create",
            "Local\\go",
            "--kind",
            "event",
            "--manual-reset",
            "--persistent",
        ],
        &["create", "Local\\once", "--kind", "event", "--persistent"],
        &["create", "Local\\m", "--kind", "mutex", "--persistent"],
    ] {
        let out = root.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let ls = stdout(&root.run(&["ls"]));
    // Compared with single spaces: the columns are as wide as the owner's name.
    let rows: Vec<String> = ls
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let me = me();
    for row in [
        format!("Local\\go event - {me} 0600 persistent not set, manual-reset"),
        format!("Local\\jobs semaphore - {me} 0600 persistent count 1 of 2"),
        format!("Local\\m mutex - {me} 0600 persistent free"),
        format!("Local\\once event - {me} 0600 persistent not set, auto-reset"),
    ] {
        assert!(rows.iter().any(|r| r.starts_with(&row)), "{row:?} in\n{ls}");
    }
    // signal releases a semaphore by one, past its maximum is an error.
    assert!(root.run(&["signal", "jobs"]).status.success());
    let out = root.run(&["signal", "jobs"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "filemap: releasing Local\\jobs by 1 would pass its maximum count of 2 (it is 2); nothing changed\n"
    );
    // wait prints what fired, lowest first; an auto-reset event fires once per signal.
    assert!(root.run(&["signal", "once"]).status.success());
    assert_eq!(
        stdout(&root.run(&["wait", "once", "jobs"])),
        "Local\\once\n"
    );
    assert_eq!(
        stdout(&root.run(&["wait", "once", "jobs"])),
        "Local\\jobs\n"
    );
    assert_eq!(
        stdout(&root.run(&["wait", "once", "jobs"])),
        "Local\\jobs\n"
    );
    let start = std::time::Instant::now();
    let out = root.run(&["wait", "once", "jobs", "--timeout", "0.3"]);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(
        stderr(&out),
        "filemap: timed out waiting for Local\\once, Local\\jobs\n"
    );
    // A manual-reset event stays set until reset.
    assert!(root.run(&["signal", "go"]).status.success());
    for _ in 0..2 {
        assert_eq!(stdout(&root.run(&["wait", "go"])), "Local\\go\n");
    }
    assert!(root.run(&["reset", "go"]).status.success());
    assert_eq!(
        root.run(&["wait", "go", "--timeout", "0"]).status.code(),
        Some(124)
    );
    // A waiter in another process is woken by a signal.
    let mut waiter = root.spawn(&["wait", "go", "jobs"]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(root.run(&["signal", "go"]).status.success());
    assert_eq!(waiter.read_until("\n"), "Local\\go\n");
    assert!(waiter.finish().0.success());
    // wait takes mutexes among the rest: a free one fires, and is given back at once.
    assert!(root.run(&["reset", "go"]).status.success());
    assert_eq!(stdout(&root.run(&["wait", "go", "m"])), "Local\\m\n");
    assert_eq!(stdout(&root.run(&["wait", "go", "m"])), "Local\\m\n");
    // "Lock this, or stop when that is set": while another process holds m, go fires...
    let mut holder = root.spawn(&["lock", "m", "--", "sh", "-c", "echo held; read line"]);
    assert_eq!(holder.read_until("\n"), "held\n");
    let mut waiter = root.spawn(&["wait", "m", "go"]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(root.run(&["signal", "go"]).status.success());
    assert_eq!(waiter.read_until("\n"), "Local\\go\n");
    assert!(waiter.finish().0.success());
    // ...and m fires once its holder lets go.
    assert!(root.run(&["reset", "go"]).status.success());
    let mut waiter = root.spawn(&["wait", "m", "go"]);
    std::thread::sleep(Duration::from_millis(100));
    holder.press_enter();
    assert!(holder.finish().0.success());
    assert_eq!(waiter.read_until("\n"), "Local\\m\n");
    assert!(waiter.finish().0.success());
    // Wrong kinds, in plain words.
    for (args, message) in [
        (
            &["signal", "m"][..],
            "filemap: Local\\m is a mutex; signal sets events and releases semaphores\n",
        ),
        (
            &["reset", "jobs"],
            "filemap: Local\\jobs is a semaphore; reset works on events\n",
        ),
        (
            &["create", "x", "--kind", "event", "--size", "10"],
            "filemap: --size applies to mappings only, not to --kind event\n",
        ),
        (
            &["create", "x", "--kind", "semaphore", "--sparse"],
            "filemap: --sparse applies to mappings only, not to --kind semaphore\n",
        ),
        (
            &["create", "x", "--kind", "mutex", "--initial", "1"],
            "filemap: --initial applies to semaphores only, not to --kind mutex\n",
        ),
        (
            &[
                "create",
                "x",
                "--kind",
                "semaphore",
                "--initial",
                "3",
                "--max",
                "2",
            ],
            "filemap: invalid argument: the initial count 3 is above the maximum count 2\n",
        ),
        (
            &["create", "m", "--kind", "event"],
            "filemap: Local\\m is a mutex, not an event\n",
        ),
        (
            &["read", "go"],
            "filemap: Local\\go is an event, not a mapping\n",
        ),
        (
            &["wait", "nothing"],
            "filemap: no object named Local\\nothing\n",
        ),
    ] {
        let out = root.run(args);
        assert_eq!(stderr(&out), message, "{args:?}");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    for name in ["jobs", "go", "once", "m"] {
        assert!(root.run(&["rm", name]).status.success());
    }
}

#[test]
fn lock_runs_a_command_under_the_mutex() {
    let root = Root::new("lock");
    // The command's status is ours.
    let out = root.run(&["lock", "Local\\l", "--", "sh", "-c", "echo inside; exit 7"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(7), "inside\n".to_owned())
    );
    // (A search path of directories that we may search: one we may not makes it 126.)
    assert_eq!(
        run_with_timeout(
            root.cmd(&["lock", "l", "--", "nonexistent-command-xyz"])
                .env("PATH", "/usr/bin:/bin")
                .stdin(Stdio::null())
        )
        .status
        .code(),
        Some(127)
    );
    // Several concurrent `lock` runs serialise a read-modify-write of a file.
    let counter = root.0.with_extension("counter");
    std::fs::write(&counter, "0").unwrap();
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do {} lock l -- sh -c 'n=$(cat {p}); sleep 0.002; echo $((n+1)) > {p}'; done",
        EXE,
        p = counter.display()
    );
    let runners: Vec<Child> = (0..4)
        .map(|_| {
            Command::new("sh")
                .args(["-c", &script])
                .env("FILEMAP_ROOT", &root.0)
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Killed if the test fails (or they hang) before they are all done.
    let dogs: Vec<_> = runners.iter().map(|r| watchdog(r.id())).collect();
    for mut r in runners {
        assert!(r.wait().unwrap().success());
    }
    for d in &dogs {
        let _ = d.send(());
    }
    let total = std::fs::read_to_string(&counter).unwrap();
    std::fs::remove_file(&counter).unwrap();
    assert_eq!(total.trim(), "40");
    // While someone holds it, a timed lock gives up with 124, no sooner than asked.
    let mut holder = root.spawn(&["lock", "l", "--", "sh", "-c", "echo held; read line"]);
    assert_eq!(holder.read_until("\n"), "held\n");
    let start = std::time::Instant::now();
    let out = root.run(&["lock", "l", "--timeout", "0.3", "--", "true"]);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(stderr(&out), "filemap: timed out waiting for Local\\l\n");
    holder.press_enter();
    assert!(holder.finish().0.success());
}

/// Issue 8: a TERM for `lock` goes to its command, and the mutex is released only when the
/// command has ended, so a second `lock` never runs beside it.
#[test]
fn lock_passes_signals_to_its_command_and_releases_only_after_it_ends() {
    let root = Root::new("lockterm");
    assert!(root.run(&["init"]).status.success());
    let log = root.0.join("log");
    let script = format!(
        "trap 'echo got-term >> {log}; sleep 0.5; echo cleaned >> {log}; exit 3' TERM; \
         echo held >> {log}; echo held; while :; do sleep 0.05; done",
        log = log.display()
    );
    let mut first = root.spawn(&["lock", "m", "--", "sh", "-c", &script]);
    assert_eq!(first.read_until("\n"), "held\n");
    let second_script = format!("echo second >> {}", log.display());
    let second = root.spawn(&["lock", "m", "--", "sh", "-c", &second_script]);
    std::thread::sleep(Duration::from_millis(300));
    // Only to `lock`, not to its process group: `lock` passes it on.
    first.signal("-TERM");
    let (status, err) = first.finish();
    assert_eq!(status.code(), Some(3), "the command's own status: {err}");
    assert!(second.finish().0.success());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "held\ngot-term\ncleaned\nsecond\n"
    );
    assert!(!stdout(&root.run(&["info", "m"])).contains("abandoned"));
    // INT and HUP are passed on too. A shell cannot trap a signal that was ignored when it
    // started, and one started in the background by a non-interactive shell (a CI job, say)
    // inherits an ignored INT: `env` resets the dispositions that `lock` hands down.
    for (sig, code) in [("INT", 4), ("HUP", 5)] {
        let script = format!("trap 'exit {code}' {sig}; echo held; while :; do sleep 0.05; done");
        let mut cmd = Command::new("env");
        cmd.args([
            "--default-signal",
            EXE,
            "lock",
            "m",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("FILEMAP_ROOT", &root.0);
        let mut p = Proc::spawn(cmd);
        assert_eq!(p.read_until("\n"), "held\n");
        p.signal(&format!("-{sig}"));
        assert_eq!(p.finish().0.code(), Some(code), "{sig}");
    }
}

/// Issue 8: if `lock` itself is killed, its command does not go on without the mutex.
#[test]
fn lock_killed_takes_its_command_with_it() {
    let root = Root::new("lockkill");
    assert!(root
        .run(&["create", "m", "--kind", "mutex", "--persistent"])
        .status
        .success());
    let mut holder = root.spawn(&["lock", "m", "--", "sh", "-c", "echo $$; exec sleep 100"]);
    let pid: u32 = holder.read_until("\n").trim().parse().unwrap();
    holder.signal("-KILL");
    let _ = holder.finish();
    // The command (`sleep`, which replaced the shell) is killed too.
    let start = std::time::Instant::now();
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => break,
            // A zombie that its new parent has not reaped yet is dead too.
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('Z') =>
            {
                break
            }
            Ok(_) if start.elapsed() > TIMEOUT => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("the command {pid} outlived lock");
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let out = root.run(&["wait", "m", "--timeout", "10"]);
    assert_eq!(out.status.code(), Some(3), "abandoned: {}", stderr(&out));
    assert!(root.run(&["rm", "m"]).status.success());
}

#[test]
fn lock_reports_an_abandoned_mutex() {
    let root = Root::new("abandoned");
    // Abandonment is seen by whoever else holds the mutex; here that holder is the
    // namespace itself (a persistent mutex). Without one, the mutex would simply be gone.
    assert!(root
        .run(&["create", "Local\\a", "--kind", "mutex", "--persistent"])
        .status
        .success());
    for round in 0..3 {
        // The holder is killed by SIGKILL, together with its command (one process group).
        let mut cmd = root.cmd(&[
            "lock",
            "Local\\a",
            "--",
            "sh",
            "-c",
            "echo held; exec sleep 100",
        ]);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut holder = Proc::spawn(cmd);
        assert_eq!(holder.read_until("\n"), "held\n");
        assert!(Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", holder.child.id())])
            .status()
            .unwrap()
            .success());
        let _ = holder.child.wait();
        if round == 0 {
            // `wait` tells an abandoned mutex apart by its status.
            let out = root.run(&["wait", "a", "--timeout", "10"]);
            assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
            assert_eq!(stdout(&out), "Local\\a\n");
            assert_eq!(
                stderr(&out),
                "filemap: the mutex Local\\a was abandoned: its owner died holding it\n"
            );
            continue;
        }
        let out = root.run(&["lock", "a", "--timeout", "10", "--", "echo", "recovered"]);
        assert_eq!(out.status.code(), Some(0), "round {round}");
        assert_eq!(stdout(&out), "recovered\n");
        assert_eq!(
            stderr(&out),
            "filemap: the mutex Local\\a was abandoned by its previous owner; running anyway\n"
        );
    }
    assert!(stdout(&root.run(&["info", "a"])).contains("state:       persistent (free)"));
    assert!(root.run(&["rm", "a"]).status.success());
    assert_eq!(stdout(&root.run(&["ls", "--json"])), "[]\n");
}

#[test]
fn client_waits_for_a_server_that_starts_later() {
    let root = Root::new("clientwait");
    let mut client = root.spawn(&["client", "--wait", "--timeout", "20"]);
    std::thread::sleep(Duration::from_millis(200));
    let mut server = root.spawn(&["server"]);
    assert_eq!(server.read_until(PROMPT), SERVER_OUT);
    assert_eq!(client.read_until(PROMPT), CLIENT_OUT);
    for p in [&mut client, &mut server] {
        p.press_enter();
    }
    assert!(client.finish().0.success());
    assert!(server.finish().0.success());
    // Without a server, --wait gives up after its timeout with status 124.
    let start = std::time::Instant::now();
    let out = root.run(&["client", "--wait", "--timeout", "0.3"]);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(
        stderr(&out),
        "The process throws the error: no server for Local\\SampleMap appeared in time (waited for Local\\SampleMap.ready)\n"
    );
    assert_eq!(stdout(&root.run(&["ls", "--json"])), "[]\n");
}

#[test]
fn another_user_can_neither_reach_nor_take_sync_objects() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("syncusers");
    assert!(root.run(&["init"]).status.success());
    for args in [
        &["create", "Local\\ev", "--kind", "event", "--persistent"][..],
        &[
            "create",
            "Global\\private-ev",
            "--kind",
            "event",
            "--persistent",
        ],
        &[
            "create",
            "Global\\shared-sem",
            "--kind",
            "semaphore",
            "--max",
            "5",
            "--mode",
            "666",
            "--persistent",
        ],
    ] {
        assert!(root.run(args).status.success());
    }
    // Root's Local\ objects do not exist for nobody.
    let out = other.run(NOBODY, &root.0, &["signal", "Local\\ev"]);
    assert_eq!(stderr(&out), "filemap: no object named Local\\ev\n");
    // An owner-only Global\ object can be neither used nor taken over.
    let out = other.run(
        NOBODY,
        &root.0,
        &["wait", "Global\\private-ev", "--timeout", "0"],
    );
    assert_eq!(
        stderr(&out),
        "filemap: permission denied: Global\\private-ev exists, but its permissions do not allow reading it\n"
    );
    assert_eq!(
        other
            .run(
                NOBODY,
                &root.0,
                &["create", "Global\\private-ev", "--kind", "event"]
            )
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        other
            .run(NOBODY, &root.0, &["rm", "Global\\private-ev"])
            .status
            .code(),
        Some(1)
    );
    // One shared with mode 666 works for everyone.
    assert!(other
        .run(NOBODY, &root.0, &["signal", "Global\\shared-sem"])
        .status
        .success());
    assert_eq!(
        stdout(&root.run(&["wait", "Global\\shared-sem"])),
        "Global\\shared-sem\n"
    );
    for name in ["Local\\ev", "Global\\private-ev", "Global\\shared-sem"] {
        assert!(root.run(&["rm", name]).status.success());
    }
}

/// Issue 8: another user with write access to a shared mutex (mode 666) overwrites its
/// state while root holds it. Root's `lock` reports the damage; nobody dies of a signal.
#[test]
fn another_user_who_may_write_a_mutex_can_break_it_but_never_crash_its_owner() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("mutexwriter");
    assert!(root.run(&["init"]).status.success());
    for (name, mode) in [("Global\\shared-m", "666"), ("Global\\readable-m", "644")] {
        let out = root.run(&[
            "create",
            name,
            "--kind",
            "mutex",
            "--mode",
            mode,
            "--persistent",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A reader may look (and sees numbers only, see the library's tests), not write.
    let readable = root.0.join("global/readable-m");
    let out = other.sh(
        NOBODY,
        &format!(
            "printf 'XXXXXXXX' | dd of={} conv=notrunc 2>&1",
            readable.display()
        ),
    );
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("Permission denied"),
        "{}",
        stdout(&out)
    );
    // A writer overwrites the whole state with garbage while root holds the mutex.
    let shared = root.0.join("global/shared-m");
    for round in 0..5 {
        let mut holder = root.spawn(&[
            "lock",
            "Global\\shared-m",
            "--timeout",
            "5",
            "--",
            "sh",
            "-c",
            "echo held; read line",
        ]);
        let held = holder.read_until("\n");
        let out = other.sh(
            NOBODY,
            &format!(
                "head -c 520 /dev/urandom | dd of={} conv=notrunc 2>/dev/null",
                shared.display()
            ),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        // Nobody uses the broken mutex too: an error or a timeout, never a signal.
        let out = other.run(
            NOBODY,
            &root.0,
            &["lock", "Global\\shared-m", "--timeout", "0.2", "--", "true"],
        );
        assert!(
            out.status.code().is_some(),
            "round {round}: {:?}",
            out.status
        );
        holder.press_enter();
        let (status, err) = holder.finish();
        assert!(
            status.code().is_some(),
            "round {round}: lock died of {status:?} ({held:?}, {err})"
        );
        assert!(
            status.success() || err.contains("is not a valid filemap object"),
            "round {round}: {status:?}, {err}"
        );
        // Zeros make it a working mutex again (a writer can also repair it).
        let out = other.sh(
            NOBODY,
            &format!(
                "head -c 520 /dev/zero | dd of={} conv=notrunc 2>/dev/null",
                shared.display()
            ),
        );
        assert!(out.status.success());
        let out = root.run(&["lock", "Global\\shared-m", "--timeout", "5", "--", "true"]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
    }
    for name in ["Global\\shared-m", "Global\\readable-m"] {
        assert!(root.run(&["rm", name]).status.success());
    }
}

/// Whether a CLI run ended as the one-line error rule says: by itself (not by a signal),
/// not by a panic (exit 101), and, if it failed, with one line on stderr.
fn ended_cleanly(what: &str, status: std::process::ExitStatus, err: &str) {
    assert!(
        status.code().is_some(),
        "{what}: died of {status:?} ({err})"
    );
    assert_ne!(status.code(), Some(101), "{what}: panicked: {err}");
    if !status.success() {
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{what}: {status:?}, {err:?}"
        );
    }
}

/// Overwrites a channel's state, as user [`NOBODY`], `times` times with bytes from `source`
/// (`/dev/urandom`, `/dev/zero`): everything after the header (which is read once, at the
/// open) and before the record in the last page, so the ring or the slots and the messages.
fn scribble_as(other: &OtherUser, file: &Path, source: &str, times: u32) {
    let state = std::fs::metadata(file).unwrap().len() - 4096 - 128;
    let out = other.sh(
        NOBODY,
        &format!(
            "for i in $(seq {times}); do head -c {state} {source} | \
             dd of={} bs=128 seek=1 conv=notrunc 2>&1 || exit 1; done",
            file.display()
        ),
    );
    assert!(out.status.success(), "{}", stdout(&out));
}

/// Another user who may write a channel (mode 666) scribbles over its state while root's
/// `send` and `recv --follow` use it: the channel may break, but each command ends with
/// its exit code and at most one line on stderr, never by a signal or a panic, and so do
/// the other user's own `recv`, `info` and `ls` of it.
#[test]
fn another_user_who_may_write_a_channel_can_break_it_but_never_crash_its_users() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("chanwriter");
    assert!(root.run(&["init"]).status.success());
    for kind in ["stream", "broadcast", "latest"] {
        let name = format!("Global\\scribbled-{kind}");
        let out = root.run(&[
            "create",
            &name,
            "--kind",
            kind,
            "--mode",
            "666",
            "--max-message",
            "64",
            "--persistent",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let file = root.0.join(format!("global/scribbled-{kind}"));
        for round in 0..4 {
            let rx = root.spawn(&["recv", &name, "--follow", "--timeout", "2"]);
            let mut tx = root.spawn(&["send", &name, "--timeout", "2"]);
            // A latest value keeps only the newest, and a subscriber starts with the next
            // message: send until the receiver has seen one.
            let mut sent = 0;
            let first = loop {
                tx.child
                    .stdin
                    .as_mut()
                    .unwrap()
                    .write_all(b"hello\n")
                    .unwrap();
                sent += 1;
                if let Ok(b) = rx.out.recv_timeout(Duration::from_millis(50)) {
                    break b;
                }
                assert!(sent < 200, "{kind}: nothing came through");
            };
            assert_eq!(first, b'h', "{kind}");
            // Garbage again and again while root sends; the sender may go when its channel
            // breaks, and then its input is closed.
            std::thread::scope(|s| {
                s.spawn(|| scribble_as(&other, &file, "/dev/urandom", 20));
                let input = tx.child.stdin.as_mut().unwrap();
                for _ in 0..20_000 {
                    if input.write_all(b"more\n").is_err() {
                        break;
                    }
                }
            });
            drop(tx.child.stdin.take());
            let (status, err) = tx.finish();
            ended_cleanly(&format!("{kind} {round}: send"), status, &err);
            let (status, err) = rx.finish();
            ended_cleanly(&format!("{kind} {round}: recv"), status, &err);
            for args in [
                &["recv", &name, "--timeout", "0.2"][..],
                &["info", &name],
                &["ls"],
            ] {
                let out = other.run(NOBODY, &root.0, args);
                ended_cleanly(
                    &format!("{kind} {round}: {args:?}"),
                    out.status,
                    &stderr(&out),
                );
            }
            // Zeros make it a channel that looks new: it works again.
            scribble_as(&other, &file, "/dev/zero", 1);
        }
        assert!(root.run(&["rm", &name]).status.success());
    }
}

/// As above, for a request/reply channel: another user who may write it scribbles over its
/// client slots while root's `serve` answers and root's `call` asks. Each command ends with
/// its exit code and at most one line on stderr if it failed, and so do the other user's
/// own `call`, `info` and `ls`; zeros make the channel answer again.
#[test]
fn another_user_who_may_write_a_request_reply_channel_can_break_it_but_never_crash_its_users() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("rpcwriter");
    assert!(root.run(&["init"]).status.success());
    let name = "Global\\scribbled-rpc";
    let out = root.run(&[
        "create",
        name,
        "--kind",
        "request-reply",
        "--mode",
        "666",
        "--capacity",
        "4",
        "--max-message",
        "64",
        "--max-reply",
        "64",
        "--persistent",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = root.0.join("global/scribbled-rpc");
    let requests: Vec<String> = (0..300).map(|i| format!("request {i}")).collect();
    let mut call = vec!["call", name, "--timeout", "1"];
    call.extend(requests.iter().map(String::as_str));
    for round in 0..4 {
        let serve = root.spawn(&["serve", name, "--timeout", "1", "--", "cat"]);
        // The channel works: a reply comes back whole.
        let out = root.run(&["call", name, "--timeout", "5", "hello"]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(stdout(&out), "hello", "round {round}");
        // Garbage again and again while root calls; two callers, so that requests wait
        // in slots while the slots change under them.
        let (first, second) = std::thread::scope(|s| {
            s.spawn(|| scribble_as(&other, &file, "/dev/urandom", 20));
            let second = s.spawn(|| root.run(&call));
            (root.run(&call), second.join().unwrap())
        });
        for (who, out) in [("first call", first), ("second call", second)] {
            ended_cleanly(&format!("round {round}: {who}"), out.status, &stderr(&out));
        }
        for args in [
            &["call", name, "--timeout", "0.2", "x"][..],
            &["info", name],
            &["ls"],
        ] {
            let out = other.run(NOBODY, &root.0, args);
            ended_cleanly(
                &format!("round {round}: {args:?}"),
                out.status,
                &stderr(&out),
            );
        }
        let (status, err) = serve.finish();
        ended_cleanly(&format!("round {round}: serve"), status, &err);
        // Zeros make it a channel that looks new: the next round's call gets its reply.
        scribble_as(&other, &file, "/dev/zero", 1);
    }
    assert!(root.run(&["rm", name]).status.success());
}

/// Issue 9: names may hold control characters (Windows allows them), but no human-readable
/// output prints them raw, and a name cannot break the one-line error rule. JSON has the
/// exact name, escaped as JSON does.
#[test]
fn names_with_control_characters_never_reach_a_terminal_raw() {
    let root = Root::new("ctlnames");
    assert!(root.run(&["init"]).status.success());
    let evil = "Global\\evil\u{1b}[2J\u{1b}]0;pwned\u{7}\nsecond line\u{202e}";
    let escaped = "Global\\evil\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\nsecond line\\u{202e}";
    // Made by another user where possible: that is who would plant it.
    let made = match OtherUser::new() {
        Some(other) => other.run(
            NOBODY,
            &root.0,
            &[
                "create",
                evil,
                "--size",
                "1",
                "--persistent",
                "--mode",
                "644",
            ],
        ),
        None => root.run(&["create", evil, "--size", "1", "--persistent"]),
    };
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(!stdout(&made).contains('\u{1b}'), "{:?}", stdout(&made));
    let clean = |s: &str| !s.contains(['\u{1b}', '\u{7}', '\u{202e}']);
    let ls = stdout(&root.run(&["ls"]));
    assert!(clean(&ls) && ls.contains(escaped), "{ls:?}");
    assert_eq!(ls.lines().count(), 2, "a header and one row: {ls:?}");
    let info = stdout(&root.run(&["info", evil]));
    assert!(
        clean(&info) && info.starts_with(&format!("name:        {escaped}\n")),
        "{info:?}"
    );
    // Errors stay on one line.
    for args in [
        &["create", evil, "--size", "1"][..],
        &["wait", evil, "--timeout", "0"],
        &["read", "Global\\nothing\nhere"],
    ] {
        let out = root.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(clean(&err) && err.lines().count() == 1, "{args:?}: {err:?}");
    }
    let json = stdout(&root.run(&["ls", "--json"]));
    assert!(
        json.contains(r#""name":"Global\\evil\u001b[2J\u001b]0;pwned\u0007\nsecond line"#),
        "{json}"
    );
    assert!(root.run(&["rm", evil]).status.success());
}

/// Issue 9: `write` reads no more than fits in the mapping, from a file or from standard
/// input, and says how much fits.
#[test]
fn write_reads_no_more_input_than_fits() {
    let root = Root::new("boundedwrite");
    assert!(root
        .run(&["create", "m", "--size", "4096", "--persistent"])
        .status
        .success());
    let endless = || Stdio::from(std::fs::File::open("/dev/zero").unwrap());
    for (args, stdin, message) in [
        (
            &["write", "m", "--input", "/dev/zero"][..],
            Stdio::null(),
            "filemap: the input does not fit: Local\\m has 4096 bytes from offset 0 to its end (4096 bytes in all)\n",
        ),
        (
            &["write", "m", "--offset", "4000"],
            endless(),
            "filemap: the input does not fit: Local\\m has 96 bytes from offset 4000 to its end (4096 bytes in all)\n",
        ),
    ] {
        let out = run_with_timeout(root.cmd(args).stdin(stdin));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), message);
    }
    // Exactly what fits is fine.
    let input = root.0.join("input");
    std::fs::write(&input, [7u8; 96]).unwrap();
    let out = root.run(&[
        "write",
        "m",
        "--offset",
        "4000",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = root.run(&["read", "m", "--offset", "4000", "--format", "raw"]);
    assert_eq!(out.stdout, [7u8; 96]);
    assert!(root.run(&["rm", "m"]).status.success());
}

/// Issue 9: whatever another user plants in `global/` (symlinks, FIFOs, directories, junk,
/// a hard link to someone's object) is never opened or removed, is reported, and never
/// makes `ls` or `gc` fail.
#[test]
fn planted_entries_are_reported_and_left_alone() {
    let root = Root::new("planted");
    assert!(root.run(&["init"]).status.success());
    assert!(root
        .run(&["create", "Global\\real", "--size", "8", "--persistent"])
        .status
        .success());
    assert!(root
        .run(&[
            "create",
            "Global\\shared",
            "--size",
            "8",
            "--persistent",
            "--mode",
            "666"
        ])
        .status
        .success());
    let g = root.0.join("global");
    let plant = format!(
        "cd {g} && ln -s /etc/shadow x && mkfifo fifo && mkdir dir && echo junk > junk \
         && echo junk > 'not encoded' && echo junk > \"$(printf 'evil\\033[2J')\" \
         && ln shared second",
        g = g.display()
    );
    let by_other = OtherUser::new();
    let out = match &by_other {
        Some(other) => other.sh(NOBODY, &plant),
        None => run_with_timeout(Command::new("sh").args(["-c", &plant])),
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = root.run(&["ls"]);
    assert_eq!(ls.status.code(), Some(0), "{}", stderr(&ls));
    let text = stdout(&ls);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    for (name, reason) in [
        ("Global\\x", "a symlink"),
        ("Global\\fifo", "a FIFO"),
        ("Global\\dir", "a directory"),
        ("Global\\junk", "it is only 5 bytes long"),
        ("?", "not a filemap file name"),
        ("Global\\shared", "2 names (hard links)"),
        ("Global\\second", "2 names (hard links)"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains("refused") && l.contains(reason)),
            "{name}: {reason} in\n{text}"
        );
    }
    assert!(text.contains("global/evil\\u{1b}[2J"), "{text}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("Global\\real ") && l.contains("persistent")));
    // JSON lists them too, with their reasons; python checks that it parses.
    let json = stdout(&root.run(&["ls", "--json"]));
    let check = run_with_timeout(
        Command::new("python3")
            .args([
                "-c",
                "import json,sys; v=json.load(sys.stdin); \
                 r=[o for o in v if o['state']=='refused']; \
                 assert len(r)==8, len(r); \
                 assert any(o['name']=='Global\\\\x' and o['refused']=='a symlink' for o in r)",
            ])
            .stdin(std::fs::File::open(write_temp(&root, "ls.json", &json)).unwrap()),
    );
    assert!(check.status.success(), "{}\n{json}", stderr(&check));
    // gc removes nothing of theirs, fails on nothing, and says what it left alone. (Without
    // a second user the junk is ours, and gc removes it as a corrupt object.)
    let gc = root.run(&["gc"]);
    assert_eq!(gc.status.code(), Some(0), "{}", stderr(&gc));
    let left_alone = if by_other.is_some() { 8 } else { 7 };
    assert_eq!(
        stdout(&gc)
            .lines()
            .filter(|l| l.starts_with("left alone "))
            .count(),
        left_alone,
        "{}",
        stdout(&gc)
    );
    assert_eq!(
        stdout(&gc).contains("removed Global\\junk, which was corrupt"),
        by_other.is_none()
    );
    let theirs: &[&str] = if by_other.is_some() {
        &["x", "fifo", "dir", "junk", "not encoded", "second"]
    } else {
        &["x", "fifo", "dir", "not encoded", "second"]
    };
    for planted in theirs.iter().copied() {
        assert!(
            std::fs::symlink_metadata(g.join(planted)).is_ok(),
            "{planted} was removed"
        );
    }
    // The hard link makes both names unusable: an object answers to one name only.
    for name in ["Global\\shared", "Global\\second", "Global\\x"] {
        let out = root.run(&["read", name]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_eq!(stderr(&out).lines().count(), 1, "{name}: {}", stderr(&out));
    }
    assert!(stderr(&root.run(&["read", "Global\\shared"])).contains("2 names (hard links)"));
}

/// Writes `text` to a file in the test's root and returns its path.
fn write_temp(root: &Root, name: &str, text: &str) -> PathBuf {
    let path = root.0.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Issue 9: a named file-backed mapping never lets its opener use its own rights on a file
/// that the mapping's creator chose, as on Windows, where the section keeps its creator's
/// handle: root cannot be made to write, or read, its own files through another user's
/// name.
#[test]
fn file_backed_names_bound_the_opener_by_their_creator() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("deputy");
    assert!(root.run(&["init"]).status.success());
    let files = other.dir.join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = |name: &str, mode: u32, text: &str| {
        let p = files.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let secret = file(
        "secret",
        0o600,
        "root only, and longer than the mapping is.",
    );
    let public = file("public", 0o644, "public!!");
    let private = files.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = private.join("open");
    std::fs::write(&hidden, "open to all, in a closed directory").unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o666)).unwrap();
    let theirs = file("theirs", 0o644, "nobody's own file, 26 bytes");
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();

    // 1. Nobody shares root's readable file read-only under a name. Root may read it, but
    //    not write it, by `write` or by the sample server's open-or-create.
    let out = other.run(
        NOBODY,
        &root.0,
        &[
            "create",
            "Global\\shared",
            "--file",
            &path(&public),
            "--read-only",
            "--persistent",
            "--mode",
            "644",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = root.run(&["read", "Global\\shared", "--format", "utf8"]);
    assert_eq!(stdout(&out), "public!!\n", "{}", stderr(&out));
    for args in [
        &["write", "Global\\shared", "XXXX"][..],
        &["server", "--name", "Global\\shared"],
    ] {
        let out = root.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(&format!(
                "Global\\shared maps {} read-only for you: its creator (uid {NOBODY} (nobody)) mapped it read-only",
                public.display()
            )),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read_to_string(&public).unwrap(), "public!!");

    // 2. Nobody maps its own file, read-write for everyone, then rewrites the record (its
    //    own file) to name root's files instead.
    let out = other.run(
        NOBODY,
        &root.0,
        &[
            "create",
            "Global\\app-state",
            "--file",
            &path(&theirs),
            "--persistent",
            "--mode",
            "666",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let entry = root.0.join("global/app-state");
    let forge = other.dir.join("forge.py");
    std::fs::write(
        &forge,
        "import struct, sys\n\
         entry, target, dev, ino = sys.argv[1:5]\n\
         p = target.encode()\n\
         with open(entry, 'r+b') as f:\n\
         \x20   f.write(struct.pack('<QQI', int(dev), int(ino), len(p)) + p + struct.pack('<I', 7))\n",
    )
    .unwrap();
    // Readable by nobody whatever the umask.
    std::fs::set_permissions(&forge, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (target, why) in [
        (&secret, "may not open for writing".to_owned()),
        (&hidden, format!("may not search {}", private.display())),
    ] {
        let m = std::fs::metadata(target).unwrap();
        let out = other.sh(
            NOBODY,
            &format!(
                "{PYTHON_FOR_OTHERS} {} {} {} {} {}",
                forge.display(),
                entry.display(),
                target.display(),
                m.dev(),
                m.ino()
            ),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let before = std::fs::read(target).unwrap();
        for args in [
            &["write", "Global\\app-state", "XXXX"][..],
            &["read", "Global\\app-state"],
        ] {
            let out = root.run(args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} on {}",
                target.display()
            );
            assert!(
                stderr(&out).contains(&format!("but its creator (uid {NOBODY} (nobody)) {why}"))
                    || args[0] == "read" && stderr(&out).contains("may not"),
                "{args:?}: {}",
                stderr(&out)
            );
        }
        assert_eq!(std::fs::read(target).unwrap(), before);
    }

    // 3. A record that others besides its owner may write is never followed.
    let out = other.sh(NOBODY, &format!("chmod 666 {}", entry.display()));
    assert!(out.status.success());
    let out = root.run(&["read", "Global\\app-state"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "users other than its owner (uid {NOBODY} (nobody)) may write its record"
        )),
        "{}",
        stderr(&out)
    );
    for name in ["Global\\shared", "Global\\app-state"] {
        assert!(root.run(&["rm", name]).status.success());
    }
}

/// Issue 9: another user who may read the namespace and an object holds every lock that
/// they can get: `flock` on the root, on `global/` and on the object's file, and an OFD read
/// lock on the object (as any holder does). Nobody else's create, open, close, ls, info, rm
/// or gc waits for them, and they cannot take the lock that would block others: a write
/// lock needs write access.
#[test]
fn another_user_can_neither_freeze_the_namespace_nor_block_an_object() {
    if OtherUser::new().is_none() {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    }
    let root = Root::new("freeze");
    assert!(root.run(&["init"]).status.success());
    assert!(root
        .run(&[
            "create",
            "Global\\shared",
            "--size",
            "8",
            "--persistent",
            "--mode",
            "644"
        ])
        .status
        .success());
    let script = format!(
        r#"
import fcntl, os, struct, sys, time
def rng(kind, start, length):
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)
fds = [os.open(p, os.O_RDONLY) for p in ("{r}", "{r}/global", "{r}/global/shared")]
for fd in fds:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
obj = fds[2]
try:
    fcntl.fcntl(obj, fcntl.F_OFD_SETLK, rng(fcntl.F_WRLCK, 0, 0))
    print("write lock taken", flush=True)
except OSError as e:
    print("write lock refused:", e.strerror, flush=True)
fcntl.fcntl(obj, fcntl.F_OFD_SETLK, rng(fcntl.F_RDLCK, 0, 2))
# A holder's lock, as filemap takes it: byte 2^40 + pid * 2^16 + slot; and a read lock
# on the unlink byte right before, which a reader can take to delay rm.
fcntl.fcntl(obj, fcntl.F_OFD_SETLK, rng(fcntl.F_RDLCK, 2**40 + os.getpid() * 65536, 1))
fcntl.fcntl(obj, fcntl.F_OFD_SETLK, rng(fcntl.F_RDLCK, 2**40 - 1, 1))
print("ready", flush=True)
sys.stdin.read()
"#,
        r = root.0.display()
    );
    let mut locker = Proc::spawn({
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            PYTHON_FOR_OTHERS,
            "-c",
            &script,
        ])
        .current_dir("/");
        c
    });
    assert_eq!(
        locker.read_until("ready\n"),
        "write lock refused: Bad file descriptor\nready\n"
    );
    // Everything goes on as usual (with a namespace lock, each of these waited 5 s and
    // failed).
    for args in [
        &["create", "Global\\new", "--size", "8", "--persistent"][..],
        &["write", "Global\\shared", "data"],
        &["read", "Global\\shared", "--len", "4", "--format", "raw"],
        &["ls"],
        &["info", "Global\\shared"],
        &["rm", "Global\\new"],
        &["gc"],
        &["wait", "Global\\shared-ev", "--timeout", "0"],
    ] {
        let out = root.run(args);
        let expected = if args[0] == "wait" { 1 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        root.run(&["read", "Global\\shared", "--len", "4", "--format", "raw"])
            .stdout,
        b"data"
    );
    // A live object is created, held, and closed: it is gone after its last holder.
    let mut holder = root.spawn(&["create", "Global\\held", "--size", "4K"]);
    holder.read_until("\n");
    assert!(stdout(&root.run(&["ls"])).contains("Global\\held "));
    holder.press_enter();
    assert!(holder.finish().0.success());
    assert!(!stdout(&root.run(&["ls"])).contains("Global\\held "));
    // The reader is a holder of Global\shared, as anyone who may open it can be, and can
    // delay its removal (README, "Where Linux stays weaker"): rm says so.
    assert!(stdout(&root.run(&["info", "Global\\shared"])).contains("1 descriptor"));
    let out = root.run(&["rm", "Global\\shared"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("removing Global\\shared: another process keeps it busy"),
        "{}",
        stderr(&out)
    );
    locker.press_enter();
    let _ = locker.finish();
    assert!(root.run(&["rm", "Global\\shared"]).status.success());
}

/// Pipes `input` through `filemap send NAME ARGS` into `filemap recv NAME --follow` (the
/// receiver started first or second) and returns what came out.
fn through_a_channel(
    root: &Root,
    name: &str,
    send_args: &[&str],
    input: &[u8],
    recv_first: bool,
) -> Vec<u8> {
    let spawn_recv = || {
        root.cmd(&["recv", name, "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut recv = recv_first.then(spawn_recv);
    // Each child is killed if the test fails (or it hangs) before it is done.
    let mut recv_dog = recv.as_ref().map(|r| watchdog(r.id()));
    let mut args = vec!["send", name];
    args.extend_from_slice(send_args);
    let mut send = root
        .cmd(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let send_dog = watchdog(send.id());
    let mut w = send.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&input).unwrap());
    if recv.is_none() {
        std::thread::sleep(Duration::from_millis(100));
        let r = spawn_recv();
        recv_dog = Some(watchdog(r.id()));
        recv = Some(r);
    }
    let out = recv.unwrap().wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(send.wait().unwrap().success(), "send failed");
    for dog in recv_dog.iter().chain([&send_dog]) {
        let _ = dog.send(());
    }
    assert!(out.status.success(), "recv: {}", stderr(&out));
    out.stdout
}

#[test]
fn send_and_recv_make_a_pipe_that_keeps_every_byte() {
    let root = Root::new("pipe");
    // A large text file by lines (each keeps its newline, long lines go in pieces), and the
    // same bytes with no structure at all by chunks; either side may start first.
    let mut text = Vec::new();
    let mut x = 12345u64;
    for i in 0..200_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 120) as usize + if i % 5000 == 0 { 700_000 } else { 0 };
        text.extend((0..len).map(|j| b'a' + ((x as usize + j) % 26) as u8));
        text.push(b'\n');
    }
    text.extend_from_slice(b"no newline at the end");
    let got = through_a_channel(&root, "Local\\lines", &[], &text, true);
    assert!(
        got == text,
        "the lines differ ({} bytes in, {} out)",
        text.len(),
        got.len()
    );
    let binary: Vec<u8> = text.iter().map(|b| b.wrapping_mul(7)).collect();
    let got = through_a_channel(&root, "Local\\chunks", &["--chunk", "64K"], &binary, false);
    assert!(got == binary, "the chunks differ");
    // Both closed: the channels went with their last handles.
    let o = root.run(&["ls"]);
    assert!(!stdout(&o).contains("Local\\lines"), "{}", stdout(&o));
}

#[test]
fn recv_exit_codes_timeout_and_a_dead_producer() {
    let root = Root::new("recvcodes");
    let o = root.run(&["recv", "Local\\quiet", "--timeout", "0.2"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    // A producer killed mid-stream: the receiver prints what came, then exits 3.
    let recv = root
        .cmd(&["recv", "Local\\dies", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let recv_dog = watchdog(recv.id());
    let mut send = root
        .cmd(&["send", "Local\\dies"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let send_dog = watchdog(send.id());
    send.stdin
        .as_mut()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    send.kill().unwrap();
    send.wait().unwrap();
    let _ = send_dog.send(());
    let out = recv.wait_with_output().unwrap();
    let _ = recv_dog.send(());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo\n");
    assert!(stderr(&out).contains("died"), "{}", stderr(&out));
    // One message by count; a message larger than the channel allows: one line, exit 1.
    let o = root.run(&[
        "create",
        "Local\\tiny",
        "--kind",
        "stream",
        "--capacity",
        "64",
        "--max-message",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut holder = root.spawn(&[
        "create",
        "Local\\small",
        "--kind",
        "stream",
        "--capacity",
        "256",
        "--max-message",
        "16",
    ]);
    holder.read_until("\n");
    let o = root.run(&[
        "send",
        "Local\\small",
        "0123456789abcdefX",
        "--timeout",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("larger than the channel"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    let o = root.run(&["info", "Local\\small"]);
    assert!(stdout(&o).contains("kind:        stream"), "{}", stdout(&o));
    holder.press_enter();
    let _ = holder.finish();
}

/// Waits until `info NAME` counts `n` peers (subscribers, readers, consumers or clients)
/// on the channel; fails after the timeout.
fn wait_for_peers(root: &Root, name: &str, n: u32) {
    wait_for_info(root, name, &format!("\"peers\":{n}"));
}

/// Waits until `info NAME --json` shows `want`; fails after the timeout.
fn wait_for_info(root: &Root, name: &str, want: &str) {
    let t = std::time::Instant::now();
    loop {
        let o = root.run(&["info", name, "--json"]);
        if stdout(&o).contains(want) {
            return;
        }
        assert!(t.elapsed() < TIMEOUT, "no {want} in {}", stdout(&o));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ls` says of a stream whether its producer and its consumer are connected, in the same
/// words for both (a stream has one of each, or none).
#[test]
fn ls_says_whether_a_streams_consumer_is_connected() {
    let root = Root::new("ls-stream");
    // `recv` makes the stream, and waits on it as its consumer.
    let rx = root.spawn(&["recv", "Local\\s", "--follow"]);
    wait_for_peers(&root, "Local\\s", 1);
    let line = stdout(&root.run(&["ls", "Local\\s"]));
    assert!(line.contains("producer none, consumer connected"), "{line}");
    // A producer sends one message and closes its end, and `recv --follow` exits 0 after
    // that message.
    let o = root.run(&["send", "Local\\s", "x"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (status, err) = rx.finish();
    assert!(status.success(), "{err}");
    // Held by `create` alone: neither side is connected.
    let mut holder = root.spawn(&["create", "Local\\t", "--kind", "stream"]);
    holder.read_until("\n");
    let line = stdout(&root.run(&["ls", "Local\\t"]));
    assert!(line.contains("producer none, consumer none"), "{line}");
    holder.press_enter();
    let _ = holder.finish();
}

#[test]
fn channels_of_every_kind_from_the_cli() {
    let root = Root::new("kinds");
    let mut b = root.spawn(&[
        "create",
        "Local\\b",
        "--kind",
        "broadcast",
        "--capacity",
        "16",
    ]);
    b.read_until("\n");
    let mut l = root.spawn(&[
        "create",
        "Local\\l",
        "--kind",
        "latest",
        "--max-message",
        "64",
    ]);
    l.read_until("\n");
    let mut r = root.spawn(&["create", "Local\\r", "--kind", "request-reply"]);
    r.read_until("\n");
    // A subscriber gets what is published after it subscribed.
    let sub = root
        .cmd(&["recv", "Local\\b", "--count", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sub_dog = watchdog(sub.id());
    wait_for_peers(&root, "Local\\b", 1);
    let o = root.run(&["send", "Local\\b", "a", "b", "c"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = sub.wait_with_output().unwrap();
    let _ = sub_dog.send(());
    assert_eq!(stdout(&out), "abc");
    // The latest value, whole.
    assert!(root.run(&["send", "Local\\l", "v1", "v2"]).status.success());
    let o = root.run(&["recv", "Local\\l"]);
    assert_eq!(stdout(&o), "v2");
    let o = root.run(&["send", "Local\\r", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("request/reply"), "{}", stderr(&o));
    let o = root.run(&["ls"]);
    for kind in ["broadcast", "latest", "request-reply"] {
        assert!(stdout(&o).contains(kind), "{}", stdout(&o));
    }
    let o = root.run(&["info", "Local\\b", "--json"]);
    assert!(stdout(&o).contains("\"capacity\":16"), "{}", stdout(&o));
    for p in [&mut b, &mut l, &mut r] {
        p.press_enter();
    }
    for p in [b, l, r] {
        assert!(p.finish().0.success());
    }
}

#[test]
fn another_user_may_use_a_channel_only_as_its_mode_allows() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("chanusers");
    assert!(root.run(&["init"]).status.success());
    // Nobody makes an owner-only stream and one that others may read (but not write).
    let mut private = Proc::spawn(other.cmd(
        NOBODY,
        &root.0,
        &["create", "Global\\ch-private", "--kind", "stream"],
    ));
    private.read_until("\n");
    let mut readable = Proc::spawn(other.cmd(
        NOBODY,
        &root.0,
        &[
            "create",
            "Global\\ch-read",
            "--kind",
            "stream",
            "--mode",
            "644",
        ],
    ));
    readable.read_until("\n");
    let mut open = Proc::spawn(other.cmd(
        NOBODY,
        &root.0,
        &[
            "create",
            "Global\\ch-open",
            "--kind",
            "stream",
            "--mode",
            "666",
        ],
    ));
    open.read_until("\n");
    for name in ["Global\\ch-private", "Global\\ch-read"] {
        for args in [
            &["send", name, "x"][..],
            &["recv", name, "--timeout", "0.1"],
        ] {
            let out = other.run(OTHER, &root.0, args);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("permission denied"),
                "{args:?}: {}",
                stderr(&out)
            );
            assert_eq!(stderr(&out).lines().count(), 1);
        }
    }
    // A stream that others may write: they may send and receive, nothing more.
    assert!(other
        .run(
            OTHER,
            &root.0,
            &["send", "Global\\ch-open", "hi", "--timeout", "0.2"]
        )
        .status
        .code()
        .is_some_and(|c| c == 124 || c == 0));
    let out = other.run(
        OTHER,
        &root.0,
        &["recv", "Global\\ch-open", "--timeout", "5"],
    );
    assert_eq!(stdout(&out), "hi", "{}", stderr(&out));
    for p in [&mut private, &mut readable, &mut open] {
        p.press_enter();
    }
    for p in [private, readable, open] {
        assert!(p.finish().0.success());
    }
}

#[test]
fn another_user_who_may_only_read_a_channel_subscribes_and_reads_read_only() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("chanreaders");
    assert!(root.run(&["init"]).status.success());
    // Nobody makes a latest value and a broadcast that others may read, and a latest value
    // that only nobody may use.
    let mut made = Vec::new();
    for (name, kind, mode) in [
        ("Global\\ro-latest", "latest", "644"),
        ("Global\\ro-bcast", "broadcast", "644"),
        ("Global\\ro-private", "latest", "600"),
    ] {
        let mut p = Proc::spawn(other.cmd(
            NOBODY,
            &root.0,
            &["create", name, "--kind", kind, "--mode", mode],
        ));
        p.read_until("\n");
        made.push(p);
    }
    // The other user reads the latest value, and waits for the next one, while nobody
    // writes lines.
    let mut writer = Proc::spawn(other.cmd(NOBODY, &root.0, &["send", "Global\\ro-latest"]));
    let mut input = writer.child.stdin.take().unwrap();
    input.write_all(b"v1\n").unwrap();
    let out = other.run(
        OTHER,
        &root.0,
        &["recv", "Global\\ro-latest", "--timeout", "20"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "v1\n");
    let mut reader = Proc::spawn(other.cmd(
        OTHER,
        &root.0,
        &[
            "recv",
            "Global\\ro-latest",
            "--count",
            "2",
            "--timeout",
            "20",
        ],
    ));
    assert_eq!(reader.read_until("v1\n"), "v1\n");
    input.write_all(b"v2\n").unwrap();
    assert_eq!(reader.read_until("v2\n"), "v2\n");
    let (status, err) = reader.finish();
    assert!(status.success(), "{err}");
    drop(input);
    let (status, err) = writer.finish();
    assert!(status.success(), "{err}");
    // It may not write, nor read what it may not read: one line each.
    for (name, args) in [
        ("Global\\ro-latest", &["send", "x"][..]),
        ("Global\\ro-bcast", &["send", "x"]),
        ("Global\\ro-private", &["recv", "--timeout", "0.1"]),
    ] {
        let mut a = vec![args[0], name];
        a.extend(&args[1..]);
        let out = other.run(OTHER, &root.0, &a);
        assert_eq!(out.status.code(), Some(1), "{a:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("permission denied"),
            "{a:?}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    // It subscribes to the broadcast: nobody publishes lines until two have arrived.
    let mut sub = Proc::spawn(other.cmd(
        OTHER,
        &root.0,
        &[
            "recv",
            "Global\\ro-bcast",
            "--count",
            "2",
            "--timeout",
            "20",
        ],
    ));
    let mut publisher = Proc::spawn(other.cmd(NOBODY, &root.0, &["send", "Global\\ro-bcast"]));
    let mut input = publisher.child.stdin.take().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && input.write_all(b"tick\n").is_ok() {
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    assert_eq!(sub.read_until("tick\ntick\n"), "tick\ntick\n");
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
    let (status, err) = sub.finish();
    assert!(status.success(), "{err}");
    // The publisher's input ended (the ticker closed it): a clean close.
    let (status, err) = publisher.finish();
    assert!(status.success(), "{err}");
    for p in &mut made {
        p.press_enter();
    }
    for p in made {
        assert!(p.finish().0.success());
    }
}

#[test]
fn recv_read_only_takes_no_role_and_refuses_streams() {
    let root = Root::new("recvro");
    let mut made: Vec<Proc> = [
        ("Local\\b", "broadcast"),
        ("Local\\s", "stream"),
        ("Local\\m", "mutex"),
    ]
    .iter()
    .map(|(name, kind)| {
        let mut p = root.spawn(&["create", name, "--kind", kind]);
        p.read_until("\n");
        p
    })
    .collect();
    // A read-only subscriber gets what is published while it is subscribed, and is no
    // peer: `info` counts none while it waits for more.
    let mut sub = root.spawn(&["recv", "Local\\b", "--read-only", "--follow"]);
    let mut publisher = root.spawn(&["send", "Local\\b"]);
    let mut input = publisher.child.stdin.take().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && input.write_all(b"tick\n").is_ok() {
                std::thread::sleep(Duration::from_millis(10));
            }
            input
        })
    };
    assert_eq!(sub.read_until("tick\n"), "tick\n");
    stop.store(true, Ordering::Relaxed);
    let input = ticker.join().unwrap();
    assert!(sub.child.try_wait().unwrap().is_none(), "it follows");
    let o = root.run(&["info", "Local\\b", "--json"]);
    assert!(stdout(&o).contains("\"peers\":0"), "{}", stdout(&o));
    // The publisher's input ends: a clean close, which ends the subscriber too.
    drop(input);
    assert!(publisher.finish().0.success());
    let (status, err) = sub.finish();
    assert!(status.success(), "{err}");
    // Streams, other kinds and missing names: one line, status 1, nothing made.
    for (name, says) in [
        ("Local\\s", "no read-only receiver"),
        ("Local\\m", "not a channel"),
        ("Local\\none", "no object named"),
    ] {
        let o = root.run(&["recv", name, "--read-only", "--timeout", "1"]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{name}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
    assert!(!stdout(&root.run(&["ls"])).contains("Local\\none"));
    for p in &mut made {
        p.press_enter();
    }
    for p in made {
        assert!(p.finish().0.success());
    }
}

/// `call NAME ARGS...` (or standard input with no ARGS) under the watchdog: its output.
fn call(root: &Root, args: &[&str], input: &[u8]) -> Output {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    let mut child = root
        .cmd(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = watchdog(child.id());
    let mut w = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    writer.join().unwrap();
    out
}

/// Waits until `info NAME` shows a connected server; fails after the timeout.
fn wait_for_server(root: &Root, name: &str) {
    wait_for_info(root, name, "\"producer\":true");
}

#[test]
fn call_and_serve_answer_requests_through_a_command() {
    let root = Root::new("rpc");
    // The client first: it makes the channel and waits for a server, which comes later.
    let early = std::thread::spawn({
        let mut cmd = root.cmd(&["call", "Local\\up", "first"]);
        move || run_with_timeout(cmd.stdin(Stdio::null()))
    });
    std::thread::sleep(Duration::from_millis(200));
    let serve = root.spawn(&[
        "serve",
        "Local\\up",
        "--count",
        "3",
        "--",
        "tr",
        "a-z",
        "A-Z",
    ]);
    let o = early.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "FIRST");
    // Each argument is one request; the replies come in order, exactly as sent.
    let o = call(&root, &["Local\\up", "hello ", "world\n"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "HELLO WORLD\n");
    // --count 3: the server closes the channel after its third answer, and exits 0.
    let (status, err) = serve.finish();
    assert!(status.success(), "{err}");
    // Standard input is one request, every byte of it (NULs, newlines, 60000 bytes).
    let serve = root.spawn(&["serve", "Local\\echo", "--", "cat"]);
    wait_for_server(&root, "Local\\echo");
    let mut x = 7u32;
    let input: Vec<u8> = (0..60_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    let o = call(&root, &["Local\\echo"], &input);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout == input,
        "the reply differs ({} bytes)",
        o.stdout.len()
    );
    let o = root.run(&["info", "Local\\echo"]);
    assert!(stdout(&o).contains("request-reply"), "{}", stdout(&o));
    // SIGTERM: the server closes the channel cleanly and exits 0; the name goes with it.
    serve.signal("-TERM");
    let (status, err) = serve.finish();
    assert!(status.success(), "{err}");
    let o = root.run(&["ls"]);
    assert!(!stdout(&o).contains("Local\\echo"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("Local\\up"), "{}", stdout(&o));
}

#[test]
fn call_and_serve_report_every_failure() {
    let root = Root::new("rpcfail");
    // No server: the call waits as long as --timeout says, then exits 124.
    let t = std::time::Instant::now();
    let o = call(&root, &["Local\\nobody", "x", "--timeout", "0.3"], b"");
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    // A server that no request comes to exits 124 after its --timeout.
    let t = std::time::Instant::now();
    let o = root.run(&["serve", "Local\\idle", "--timeout", "0.3", "--", "cat"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    // Requests larger than the channel allows, as arguments or on standard input: one
    // line that states the limit, exit 1.
    let mut holder = root.spawn(&[
        "create",
        "Local\\small",
        "--kind",
        "request-reply",
        "--max-message",
        "8",
        "--max-reply",
        "16",
    ]);
    holder.read_until("\n");
    for (args, input) in [
        (&["Local\\small", "0123456789"][..], &b""[..]),
        (&["Local\\small"][..], &b"0123456789"[..]),
    ] {
        let o = call(&root, args, input);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains('8'), "{}", stderr(&o));
        assert!(stderr(&o).contains("larger"), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
    // A reply larger than the channel allows is never cut: the server says so and closes
    // the channel, and its client is told, not left waiting.
    let serve = root.spawn(&["serve", "Local\\small", "--", "echo", "0123456789abcdefXYZ"]);
    wait_for_server(&root, "Local\\small");
    let o = call(&root, &["Local\\small", "q"], b"");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("closed"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let (status, err) = serve.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("largest reply (16 bytes)"), "{err}");
    holder.press_enter();
    assert!(holder.finish().0.success());
    // A command that fails still answers with what it printed, and the server goes on.
    let serve = root.spawn(&[
        "serve",
        "Local\\fails",
        "--count",
        "2",
        "--",
        "sh",
        "-c",
        "printf partial; exit 3",
    ]);
    let o = call(&root, &["Local\\fails", "a", "b"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "partialpartial");
    let (status, err) = serve.finish();
    assert!(status.success(), "{err}");
    assert_eq!(err.matches("failed on a request").count(), 2, "{err}");
    // A command that cannot run: 127, and the waiting client is told.
    let serve = root.spawn(&["serve", "Local\\nocmd", "--", "/nonexistent/cmd"]);
    let o = call(&root, &["Local\\nocmd", "q"], b"");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (status, err) = serve.finish();
    assert_eq!(status.code(), Some(127), "{err}");
    assert!(err.contains("cannot run /nonexistent/cmd"), "{err}");
    // A server killed while it answers: the client exits 3, and the command goes too.
    let serve = root.spawn(&[
        "serve",
        "Local\\dies",
        "--",
        "sh",
        "-c",
        "echo $$ >&2; exec sleep 30",
    ]);
    wait_for_server(&root, "Local\\dies");
    let client = root
        .cmd(&["call", "Local\\dies", "q"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = watchdog(client.id());
    let mut serve = serve;
    let mut err = serve.child.stderr.take().unwrap();
    let mut pid = String::new();
    let mut b = [0u8; 1];
    while err.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        pid.push(b[0] as char);
    }
    serve.signal("-KILL");
    let out = client.wait_with_output().unwrap();
    let _ = done.send(());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("died"), "{}", stderr(&out));
    let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
    let t = std::time::Instant::now();
    while proc_dir.exists() && !is_zombie(&proc_dir) {
        assert!(t.elapsed() < TIMEOUT, "the command outlived its server");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(serve);
    // One server at a time; the other kinds are refused by name.
    let first = root.spawn(&["serve", "Local\\one", "--", "cat"]);
    wait_for_server(&root, "Local\\one");
    let o = root.run(&["serve", "Local\\one", "--", "cat"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("server"), "{}", stderr(&o));
    first.signal("-INT");
    assert!(first.finish().0.success());
    let mut stream = root.spawn(&["create", "Local\\st", "--kind", "stream"]);
    stream.read_until("\n");
    for args in [
        &["call", "Local\\st", "x"][..],
        &["serve", "Local\\st", "--", "cat"],
    ] {
        let o = root.run(args);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("stream"), "{}", stderr(&o));
    }
    let o = root.run(&["serve", "Local\\st"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    stream.press_enter();
    assert!(stream.finish().0.success());
}

#[test]
fn a_call_waits_for_a_free_client_slot() {
    let root = Root::new("rpcslots");
    let mut holder = root.spawn(&[
        "create",
        "Local\\one-slot",
        "--kind",
        "request-reply",
        "--capacity",
        "1",
    ]);
    holder.read_until("\n");
    // The only slot taken by a call that waits for a server.
    let spawn_call = |request: &str| {
        root.cmd(&["call", "Local\\one-slot", request])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn_call("first ");
    // Killed if the test fails before they answer.
    let first_dog = watchdog(first.id());
    wait_for_peers(&root, "Local\\one-slot", 1);
    // Another call gives up after --timeout, saying why.
    let t = std::time::Instant::now();
    let o = call(&root, &["Local\\one-slot", "x", "--timeout", "0.3"], b"");
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(stderr(&o).contains("free client slot"), "{}", stderr(&o));
    // Without one, it waits for the slot, and both are answered once a server comes.
    let second = spawn_call("second");
    let second_dog = watchdog(second.id());
    std::thread::sleep(Duration::from_millis(100));
    let serve = root.spawn(&["serve", "Local\\one-slot", "--count", "2", "--", "cat"]);
    for (child, want, done) in [(first, "first ", first_dog), (second, "second", second_dog)] {
        let out = child.wait_with_output().unwrap();
        let _ = done.send(());
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), want);
    }
    assert!(serve.finish().0.success());
    holder.press_enter();
    assert!(holder.finish().0.success());
}

/// Whether the process at `/proc/PID` is a zombie (dead, not yet reaped).
fn is_zombie(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn another_user_can_neither_call_nor_serve_an_owner_only_channel() {
    let Some(other) = OtherUser::new() else {
        eprintln!("skipped: needs root and setpriv to switch users");
        return;
    };
    let root = Root::new("rpcusers");
    assert!(root.run(&["init"]).status.success());
    // Nobody serves a channel that `serve` made, owner-only as every new object is.
    let serve = Proc::spawn(other.cmd(
        NOBODY,
        &root.0,
        &[
            "serve",
            "Global\\rpc",
            "--count",
            "1",
            "--",
            "tr",
            "a-z",
            "A-Z",
        ],
    ));
    let t = std::time::Instant::now();
    while !stdout(&other.run(NOBODY, &root.0, &["info", "Global\\rpc", "--json"]))
        .contains("\"producer\":true")
    {
        assert!(t.elapsed() < TIMEOUT, "no server");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Another user may neither send it a request (and so run the command) nor take the
    // server's role.
    for args in [
        &["call", "Global\\rpc", "x", "--timeout", "1"][..],
        &["serve", "Global\\rpc", "--count", "1", "--", "cat"],
    ] {
        let out = other.run(OTHER, &root.0, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("permission denied"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1);
    }
    // Its owner's call is the first request the server sees.
    let out = other.run(NOBODY, &root.0, &["call", "Global\\rpc", "mine"]);
    assert_eq!(stdout(&out), "MINE", "{}", stderr(&out));
    assert!(serve.finish().0.success());
}

#[test]
fn numbers_are_written_and_read_by_type() {
    let root = Root::new("numbers");
    let mut holder = root.spawn(&["create", "Local\\nums", "--size", "64"]);
    holder.read_until("\n");
    let ok = |args: &[&str]| {
        let o = root.run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let read = |offset: &str, len: &str, format: &str| {
        ok(&[
            "read",
            "Local\\nums",
            "--offset",
            offset,
            "--len",
            len,
            "--format",
            format,
        ])
    };
    // At an odd offset, little-endian, each type's whole range.
    ok(&[
        "write",
        "Local\\nums",
        "--offset",
        "3",
        "--as",
        "u32",
        "1, 2 4294967295",
    ]);
    assert_eq!(read("3", "12", "u32"), "1\n2\n4294967295\n");
    let hex = ok(&["read", "Local\\nums", "--len", "16"]);
    assert!(
        hex.contains("00 00 00 01 00 00 00 02 00 00 00 ff ff ff ff 00"),
        "{hex}"
    );
    ok(&[
        "write",
        "Local\\nums",
        "--offset",
        "20",
        "--as",
        "f64",
        "--",
        "-1.5",
    ]);
    ok(&[
        "write",
        "Local\\nums",
        "--offset",
        "28",
        "--as",
        "i16",
        "--",
        "-32768 32767",
    ]);
    assert_eq!(read("20", "8", "f64"), "-1.5\n");
    assert_eq!(read("28", "4", "i16"), "-32768\n32767\n");
    assert_eq!(read("28", "4", "u8"), "0\n128\n255\n127\n");
    // Bad input: one line, exit 1, nothing written.
    for (args, says) in [
        (
            &["write", "Local\\nums", "--as", "u8", "1 256"][..],
            "\"256\" is not a u8",
        ),
        (&["write", "Local\\nums", "--as", "i16", ","], "no i16"),
        (
            &["write", "Local\\nums", "--offset", "60", "--as", "u64", "1"],
            "does not fit",
        ),
        (
            &["read", "Local\\nums", "--len", "10", "--format", "u32"],
            "not a whole number of u32",
        ),
    ] {
        let o = root.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1);
    }
    assert_eq!(
        ok(&["read", "Local\\nums", "--len", "1", "--format", "u8"]),
        "0\n"
    );
    holder.press_enter();
    assert!(holder.finish().0.success());
}

/// `serve --parallel 3` runs three commands at once: each waits (up to 10 s) until all
/// three have started, and answers how many it saw, which one at a time would never reach.
#[test]
fn serve_answers_requests_in_parallel() {
    let root = Root::new("rpcpar");
    let barrier = PathBuf::from(format!(
        "/tmp/filemap-clitest-barrier-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&barrier).unwrap();
    // Removed at the end, whatever happens.
    let _barrier = Root(barrier.clone());
    let script = format!(
        "d={}; cat >/dev/null; touch \"$d/$$\"; i=0; \
         while [ \"$(ls \"$d\" | wc -l)\" -lt 3 ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; \
         printf %s \"$(ls \"$d\" | wc -l)\"",
        barrier.display()
    );
    let serve = root.spawn(&[
        "serve",
        "Local\\par",
        "--parallel",
        "3",
        "--count",
        "3",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    wait_for_server(&root, "Local\\par");
    let calls: Vec<_> = (0..3)
        .map(|i| {
            root.cmd(&["call", "Local\\par", &i.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in calls {
        let done = watchdog(c.id());
        let out = c.wait_with_output().unwrap();
        let _ = done.send(());
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "3", "all three ran at once");
    }
    let (status, err) = serve.finish();
    assert!(status.success(), "{err}");
    // 0 is refused.
    let o = root.run(&["serve", "Local\\par", "--parallel", "0", "--", "cat"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn ls_filters_by_kind_and_rm_takes_many_names() {
    let root = Root::new("kindsrm");
    for args in [
        &["create", "Local\\m", "--size", "64", "--persistent"][..],
        &["create", "Local\\e", "--kind", "event", "--persistent"],
        &["create", "Local\\s", "--kind", "stream", "--persistent"],
        &["create", "Global\\g", "--kind", "event", "--persistent"],
    ] {
        let o = root.run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(root.listed(&["--kind", "event"]), ["Local\\e", "Global\\g"]);
    assert_eq!(
        root.listed(&["--kind", "stream", "--kind", "mapping"]),
        ["Local\\m", "Local\\s"]
    );
    assert_eq!(root.listed(&["Local\\", "--kind", "event"]), ["Local\\e"]);
    let o = root.run(&["ls", "--kind", "event", "--json"]);
    assert_eq!(stdout(&o).matches("\"kind\":\"event\"").count(), 2);
    assert!(!stdout(&o).contains("mapping"), "{}", stdout(&o));
    // rm removes every name it can, and says which it cannot, one line each: exit 1.
    let o = root.run(&["rm", "Local\\m", "Local\\nope", "Local\\e", "Local\\gone"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains("Local\\nope") && err.contains("Local\\gone"),
        "{err}"
    );
    assert_eq!(root.listed(&[]), ["Local\\s", "Global\\g"]);
    let o = root.run(&["rm", "Local\\s", "Global\\g"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(root.listed(&[]).is_empty());
}

/// `info --holders` is for Windows; on Linux `info` names the holders always, and the flag
/// changes nothing.
#[test]
fn info_holders_flag_changes_nothing_on_linux() {
    let root = Root::new("holdersflag");
    let mut holder = root.spawn(&["create", "Local\\h", "--size", "64"]);
    holder.read_until("\n");
    let pid = holder.child.id();
    let plain = root.run(&["info", "Local\\h"]);
    let flagged = root.run(&["info", "Local\\h", "--holders"]);
    assert!(flagged.status.success(), "{}", stderr(&flagged));
    assert_eq!(stdout(&plain), stdout(&flagged));
    assert!(
        stdout(&flagged).contains(&format!("holders:     {pid} (1 descriptor in all)")),
        "{}",
        stdout(&flagged)
    );
    holder.press_enter();
    assert!(holder.finish().0.success());
}
