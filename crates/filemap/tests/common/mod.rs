//! Helpers shared by the integration tests: a private namespace root per test, unique
//! names, child processes that re-run this test binary in a role, and a watchdog.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use filemap::{Namespace, Options};

/// A test's own objects: on Linux a namespace root of its own under /dev/shm, removed when
/// dropped; on Windows, where objects live in the kernel's session namespace, a tag that
/// [`TestRoot::name`] adds to every name.
pub struct TestRoot {
    pub path: PathBuf,
    tag: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestRoot {
    pub fn new(tag: &str) -> TestRoot {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("filemap-test-{tag}-{}-{n}", std::process::id());
        let path = if cfg!(windows) {
            std::env::temp_dir().join(&tag)
        } else {
            PathBuf::from("/dev/shm").join(&tag)
        };
        let _ = std::fs::remove_dir_all(&path);
        TestRoot { path, tag }
    }

    /// A root in the temporary directory, for behaviour that differs between file systems
    /// (on these machines `/tmp` is ext4, while `/dev/shm` is tmpfs).
    pub fn in_temp_dir(tag: &str) -> TestRoot {
        let mut root = TestRoot::new(tag);
        root.path = std::env::temp_dir().join(&root.tag);
        let _ = std::fs::remove_dir_all(&root.path);
        root
    }

    /// The name `name` for this test: unchanged on Linux, where the root is the test's own;
    /// with the test's tag appended on Windows.
    pub fn name(&self, name: &str) -> String {
        if cfg!(windows) {
            format!("{name}-{}", self.tag)
        } else {
            name.to_owned()
        }
    }

    pub fn ns(&self) -> Namespace {
        Namespace::at(&self.path)
    }

    pub fn opts(&self) -> filemap::Options {
        let mut o = filemap::Options::new();
        o.namespace(self.ns());
        o
    }

    /// The object files in the caller's Local\ namespace.
    #[cfg(target_os = "linux")]
    pub fn local_files(&self) -> Vec<String> {
        let uid = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap_or(0);
        let dir = self.path.join(format!("local-{uid}"));
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The environment variable that tells a re-run test binary which role to play.
pub const ROLE_ENV: &str = "FILEMAP_TEST_ROLE";

/// Starts this test binary again, running only the test `entry`, with `role` and `args`
/// in the environment. Its stdout is piped.
pub fn spawn_role(entry: &str, role: &str, root: &Path, args: &[&str]) -> Child {
    spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([entry, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE_ENV, role)
            .env("FILEMAP_TEST_ARGS", args.join("\u{1f}"))
            .env("FILEMAP_ROOT", root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("spawn child role")
}

/// `Command::spawn`, retried a few times when Wine's `CreateProcess` fails with
/// `ERROR_INTERNAL_ERROR` (1359), which it does about once in a few hundred spawns under a
/// burst of process creation (8 racing children, say). Any other error fails at once.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    const ERROR_INTERNAL_ERROR: i32 = 1359;
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e)
                if cfg!(windows) && e.raw_os_error() == Some(ERROR_INTERNAL_ERROR) && tries < 5 =>
            {
                tries += 1;
                eprintln!("CreateProcess failed with ERROR_INTERNAL_ERROR (Wine); retry {tries}");
                std::thread::sleep(Duration::from_millis(50 * tries));
            }
            result => return result,
        }
    }
}

/// In a child: the role and its arguments, if this process is one.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var("FILEMAP_TEST_ARGS").unwrap_or_default();
    Some((role, args.split('\u{1f}').map(String::from).collect()))
}

/// The prefix of the lines a child reports; the test harness prints other lines too.
pub const REPORT: &str = "@@ ";

/// Reads the next report line (see [`REPORT`]) from a child's stdout, without the prefix;
/// kills the child after `timeout` so that the test fails rather than hangs.
pub fn read_line_within(child: &mut Child, timeout: Duration) -> String {
    // End of output before a report gives "", which the caller's assertion reports.
    while let Some(line) = read_raw_line(child, timeout) {
        if let Some(report) = line.strip_prefix(REPORT) {
            return report.to_owned();
        }
    }
    String::new()
}

/// One line, or `None` at end of output.
fn read_raw_line(child: &mut Child, timeout: Duration) -> Option<String> {
    use std::io::Read;
    let pid = child.id();
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // The watchdog: the child prints promptly or the test fails rather than hangs.
    let guard = Watchdog::new(timeout, move || kill_pid(pid));
    let mut eof = false;
    loop {
        match stdout.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            _ => {
                eof = true;
                break;
            }
        }
    }
    drop(guard);
    assert!(
        Instant::now() <= deadline + Duration::from_millis(100),
        "child {pid} too slow"
    );
    if eof && line.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Runs `on_timeout` if not dropped within `after`.
pub struct Watchdog {
    cancel: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    pub fn new(after: Duration, on_timeout: impl FnOnce() + Send + 'static) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
                on_timeout();
            }
        });
        Watchdog { cancel: Some(tx) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
    }
}

/// Kills a process by id, as hard as the OS allows (a watchdog's last resort).
fn kill_pid(pid: u32) {
    let pid = pid.to_string();
    let _ = if cfg!(windows) {
        Command::new("taskkill").args(["/F", "/PID", &pid]).status()
    } else {
        Command::new("kill").args(["-KILL", &pid]).status()
    };
}

/// Kills a child the hard way (SIGKILL on Unix, TerminateProcess on Windows: no clean-up
/// code runs) and reaps it.
pub fn kill_hard(kid: &mut Reap) {
    kid.0.kill().unwrap();
    kid.0.wait().unwrap();
}

/// Kills and reaps a child if the test panics before it does.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a file when dropped.
pub struct RemoveFile(pub PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// In a child: blocks until the parent closes our stdin (the signal to let go).
pub fn wait_for_stdin_eof() {
    use std::io::BufRead;
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
}

/// In a child: options for the namespace that `FILEMAP_ROOT` names (the parent's root).
pub fn opts() -> Options {
    let mut o = Options::new();
    o.namespace(Namespace::new());
    o
}

/// In a child: one report line for the parent (see [`REPORT`]), flushed at once.
pub fn report(s: impl std::fmt::Display) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{REPORT}{s}").unwrap();
    o.flush().unwrap();
}

/// Kills the whole test process if a test hangs.
pub fn watchdog(secs: u64) -> Watchdog {
    Watchdog::new(Duration::from_secs(secs), || {
        eprintln!("watchdog: test hung");
        std::process::abort();
    })
}

/// Collects the next report of every child (each within `timeout`), in the children's
/// order.
pub fn next_reports(kids: &mut [Reap], timeout: Duration) -> Vec<String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = kids
            .iter_mut()
            .map(|k| s.spawn(move || read_line_within(&mut k.0, timeout)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// In a child: takes the mutex `name` (creating it if needed), reports `owner` (or
/// `owner-abandoned`), holds it until stdin closes, releases it and reports `released`.
pub fn own_mutex_until_eof(name: &str) {
    let m = opts().open_or_create_mutex(name).unwrap();
    let lock = m.lock().unwrap();
    report(if lock.is_abandoned() {
        "owner-abandoned"
    } else {
        "owner"
    });
    wait_for_stdin_eof();
    drop(lock);
    report("released");
}

/// Garbage for the tests in which someone who may write an object scribbles over its
/// shared state (Linux: they write its file).
#[cfg(target_os = "linux")]
pub mod garbage {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    /// A xorshift generator: random enough for garbage, and the same every run.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// A word from random bits `w`: small numbers, numbers near the top and lengths or
    /// positions just past an object's are the likely wrong ones.
    pub fn likely_wrong(w: u64) -> [u8; 8] {
        let v = match w % 5 {
            0 => w >> 58,
            1 => u64::MAX - (w >> 58),
            2 => (w >> 32) % 8192,
            3 => w & 0xffff_ffff,
            _ => w,
        };
        v.to_le_bytes()
    }

    /// Garbage round `round` over bytes `from..area` of `file` (`from` a multiple of 8,
    /// `area` of 4096): random words at random places, or a page of random bytes, or a
    /// page of plausible numbers (every length and position in it wrong by little, so that
    /// no check may count on large numbers to catch it); now and then zeros (an object
    /// that looks new) or all ones.
    pub fn scribble(file: &File, from: usize, area: usize, round: u64, rng: &mut Rng) {
        // A page at a random place, cut to start at `from`.
        let page = |page: Vec<u8>, r: u64| {
            let at = (r as usize % (area / 4096)) * 4096;
            let skip = from.saturating_sub(at);
            file.write_all_at(&page[skip..], (at + skip) as u64)
                .unwrap();
        };
        match round % 10 {
            0 => file
                .write_all_at(&vec![0u8; area - from], from as u64)
                .unwrap(),
            1 => file
                .write_all_at(&vec![0xffu8; area - from], from as u64)
                .unwrap(),
            2 => page((0..4096).map(|_| rng.next() as u8).collect(), rng.next()),
            3 => page(
                (0..512)
                    .flat_map(|_| ((rng.next() >> 32) % 8192).to_le_bytes())
                    .collect(),
                rng.next(),
            ),
            _ => {
                for _ in 0..1 + rng.next() % 8 {
                    write_word(file, from, area, rng);
                }
            }
        }
    }

    /// A likely wrong word at a random place in `from..area` of `file`.
    fn write_word(file: &File, from: usize, area: usize, rng: &mut Rng) {
        let at = from + (rng.next() as usize % ((area - from) / 8)) * 8;
        file.write_all_at(&likely_wrong(rng.next()), at as u64)
            .unwrap();
    }

    /// Runs `f` while another thread writes likely wrong words all over bytes `from..area`
    /// of `file`, without a pause, so that bytes also change between a check and the use
    /// of what it checked. The thread stops when `f` returns or panics.
    pub fn scribbling<T>(file: &File, from: usize, area: usize, f: impl FnOnce() -> T) -> T {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            let stop = &stop;
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
                while !stop.load(SeqCst) {
                    write_word(file, from, area, &mut rng);
                }
            });
            f()
        })
    }

    /// Sets a flag when dropped: stops a helper thread also when the test fails.
    struct StopOnDrop<'a>(&'a AtomicBool);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
}
