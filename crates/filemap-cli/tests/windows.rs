//! The sample's server and client as two Windows processes (run under Wine in CI).
#![cfg(windows)]
#![allow(clippy::disallowed_macros)] // tests may print; only the CLI itself must not

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `filemap ls` opens every object of the session for a moment. Beside a test that checks
/// an object's handle count or holders, that moment would show (as it did once for
/// `Namespace::list` in the library's Windows tests). The listing test takes this for
/// writing, those tests for reading.
static LISTING: RwLock<()> = RwLock::new(());

/// Shares [`LISTING`] for a test that checks handles or holders (a test that panicked
/// with it leaves it as it was).
fn not_listing() -> RwLockReadGuard<'static, ()> {
    LISTING.read().unwrap_or_else(|e| e.into_inner())
}

/// Takes [`LISTING`] for a test that lists the session's objects.
fn listing() -> RwLockWriteGuard<'static, ()> {
    LISTING.write().unwrap_or_else(|e| e.into_inner())
}

const EXE: &str = env!("CARGO_BIN_EXE_filemap");
const PROMPT: &str = "Press ENTER to clean up resources and quit";

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Reap {
    spawn_with_flags(args, 0)
}

/// `spawn` with process creation flags (`CREATE_NEW_CONSOLE`, ...).
fn spawn_with_flags(args: &[&str], flags: u32) -> Reap {
    use std::os::windows::process::CommandExt;
    let mut cmd = Command::new(EXE);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .creation_flags(flags);
    Reap(retry_wine(|| cmd.spawn()))
}

/// Runs `start` again, a few times, when Wine's `CreateProcess` fails with
/// `ERROR_INTERNAL_ERROR` (1359), which it does about once in a few hundred spawns under a
/// burst of process creation. Any other error fails at once.
fn retry_wine<T>(mut start: impl FnMut() -> std::io::Result<T>) -> T {
    const ERROR_INTERNAL_ERROR: i32 = 1359;
    let mut tries = 0;
    loop {
        match start() {
            Err(e) if e.raw_os_error() == Some(ERROR_INTERNAL_ERROR) && tries < 5 => {
                tries += 1;
                eprintln!("CreateProcess failed with ERROR_INTERNAL_ERROR (Wine); retry {tries}");
                std::thread::sleep(std::time::Duration::from_millis(50 * tries));
            }
            result => return result.unwrap(),
        }
    }
}

/// Output up to and including the prompt (the prompt has no newline).
fn until_prompt(p: &mut Reap) -> String {
    let out = p.0.stdout.as_mut().unwrap();
    let mut text = Vec::new();
    let mut b = [0u8; 1];
    while !text.ends_with(PROMPT.as_bytes()) {
        if out.read(&mut b).unwrap() == 0 {
            break;
        }
        text.push(b[0]);
    }
    String::from_utf8_lossy(&text).replace("\r\n", "\n")
}

#[test]
fn server_and_client_as_two_windows_processes() {
    let name = format!("Local\\filemap-cli-test-{}", std::process::id());
    let mut server = spawn(&["server", "--name", &name]);
    assert_eq!(
        until_prompt(&mut server),
        format!(
            "The file mapping ({name}) is created\nThe file view is mapped\nThis message is written to the view:\n\"Message from the first process.\"\n{PROMPT}"
        )
    );
    let mut client = spawn(&["client", "--name", &name]);
    assert_eq!(
        until_prompt(&mut client),
        format!(
            "The file mapping ({name}) is opened\nThe file view is mapped\nRead from the file mapping:\n\"Message from the first process.\"\n{PROMPT}"
        )
    );
    for p in [&mut client, &mut server] {
        p.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    }
    assert!(client.0.wait().unwrap().success());
    assert!(server.0.wait().unwrap().success());
    // Both closed it: the client now fails in the sample's words.
    let out = run(&["client", "--name", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).replace("\r\n", "\n"),
        format!("The process throws the error: no mapping named {name}\n")
    );
}

#[test]
fn client_waits_for_a_later_server() {
    let name = format!("Local\\filemap-cli-wait-{}", std::process::id());
    let mut client = spawn(&["client", "--name", &name, "--wait", "--timeout", "20"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut server = spawn(&["server", "--name", &name]);
    until_prompt(&mut server);
    assert!(until_prompt(&mut client).contains("\"Message from the first process.\""));
    for p in [&mut client, &mut server] {
        p.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    }
    assert!(client.0.wait().unwrap().success());
    assert!(server.0.wait().unwrap().success());
}

fn read_line(p: &mut Reap) -> String {
    let out = p.0.stdout.as_mut().unwrap();
    let mut text = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        text.push(b[0]);
    }
    String::from_utf8_lossy(&text).trim_end().to_owned()
}

fn run(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(EXE);
    cmd.args(args).stdin(Stdio::null());
    retry_wine(|| cmd.output())
}

/// `run` for a command that starts processes of its own (`demo`): run again, a few times,
/// if it failed because Wine could not start one (`os error 1359`, see [`retry_wine`]).
fn run_starting_processes(args: &[&str]) -> std::process::Output {
    let mut tries = 0;
    loop {
        tries += 1;
        let out = run(args);
        if out.status.success()
            || tries == 5
            || !String::from_utf8_lossy(&out.stderr).contains("os error 1359")
        {
            return out;
        }
        eprintln!("{args:?} could not start a process (Wine); retry {tries}");
        std::thread::sleep(std::time::Duration::from_millis(50 * tries));
    }
}

#[test]
fn signal_wait_and_lock_on_windows() {
    let _counting = not_listing();
    let name = format!("Local\\filemap-cli-ev-{}", std::process::id());
    let mut holder = spawn(&["create", &name, "--kind", "event"]);
    assert!(
        read_line(&mut holder).starts_with(&format!("created event {name} (auto-reset, not set)"))
    );
    let info = String::from_utf8_lossy(&run(&["info", &name]).stdout).replace("\r\n", "\n");
    assert!(
        info.starts_with(&format!(
            "name:        {name}\nkind:        event\nsize:        ?\nstate:       live (not set, auto-reset)\nfile-backed: no\nhandles:     1 (besides this one)\ncreator pid"
        )),
        "{info}"
    );
    assert!(run(&["signal", &name]).status.success());
    let out = run(&["wait", &name, "--timeout", "5"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), name);
    let start = std::time::Instant::now();
    assert_eq!(
        run(&["wait", &name, "--timeout", "0.3"]).status.code(),
        Some(124)
    );
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    let mutex = format!("Local\\filemap-cli-lock-{}", std::process::id());
    assert_eq!(
        run(&["lock", &mutex, "--", "cmd", "/c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    holder.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
}

/// Not a test by itself: in the child role that `ctrl_c_cleans_up` starts, it
/// attaches to the server's console and sends Ctrl-C there, the way a user's keypress
/// would arrive. A child does it because attaching changes the process's console.
#[test]
fn child() {
    use windows_sys::Win32::Foundation::TRUE;
    use windows_sys::Win32::System::Console::{
        AttachConsole, FreeConsole, GenerateConsoleCtrlEvent, SetConsoleCtrlHandler, CTRL_C_EVENT,
    };
    let Ok(pid) = std::env::var("FILEMAP_TEST_CTRL_C_TO") else {
        return;
    };
    let pid: u32 = pid.parse().unwrap();
    // SAFETY: plain calls with a process id. Ignoring Ctrl-C here keeps this process alive
    // while the event goes to every process of the console it attached to, which is the
    // server alone.
    let ok = unsafe {
        FreeConsole();
        AttachConsole(pid) != 0
            && SetConsoleCtrlHandler(None, TRUE) != 0
            && GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0) != 0
    };
    if !ok {
        eprintln!("@@ {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

/// Starts the CLI in a console of its own, so that a Ctrl-C sent there reaches it alone.
fn spawn_in_own_console(args: &[&str]) -> Reap {
    spawn_with_flags(
        args,
        windows_sys::Win32::System::Threading::CREATE_NEW_CONSOLE,
    )
}

/// Presses Ctrl-C in `p`'s console (through the `child` role) and waits, under a watchdog,
/// for `p` to exit. `p` keeps its stdin open, so only the Ctrl-C can end it.
fn ctrl_c(p: &mut Reap) -> std::process::ExitStatus {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture"])
        .env("FILEMAP_TEST_CTRL_C_TO", p.0.id().to_string());
    let sender = retry_wine(|| cmd.output());
    assert!(
        sender.status.success(),
        "{}",
        String::from_utf8_lossy(&sender.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Ctrl-C did not end pid {}",
            p.0.id()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Ctrl-C ends `create` and the server cleanly: they say why (`create`), close, exit 0, and
/// their objects are gone.
#[test]
fn ctrl_c_cleans_up() {
    let name = format!("Local\\filemap-cli-ctrl-c-{}", std::process::id());
    let mut holder = spawn_in_own_console(&["create", &name, "--kind", "event"]);
    assert!(read_line(&mut holder).starts_with("created event"));
    let status = ctrl_c(&mut holder);
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    holder
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        err.replace("\r\n", "\n"),
        format!(
            "holding {name} open; press ENTER (or Ctrl-C, or close input) to close it\n\
             closing {name} (Ctrl-C)\n"
        )
    );
    assert_eq!(run(&["signal", &name]).status.code(), Some(1));

    let mut server = spawn_in_own_console(&["server", "--name", &name]);
    until_prompt(&mut server);
    let status = ctrl_c(&mut server);
    assert!(status.success(), "{status:?}");
    assert_eq!(run(&["client", "--name", &name]).status.code(), Some(1));
}

/// The README's main command works on Windows: the demo runs the server and the client as
/// two Windows processes and checks that the mapping is gone afterwards.
#[test]
fn demo_runs_on_windows() {
    let name = format!("Local\\filemap-cli-demo-{}", std::process::id());
    let out = run_starting_processes(&["demo", "--name", &name]);
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("[client] \"Message from the first process.\"\n"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "[demo] both processes closed {name}, so it no longer exists\n"
        )),
        "{text}"
    );
}

/// Bad input on Windows gets one line on stderr and a non-zero exit, as on Linux, and what
/// Windows cannot do is said plainly.
#[test]
fn bad_input_gets_one_line_and_a_nonzero_exit_on_windows() {
    let pid = std::process::id();
    let held = format!("Local\\filemap-cli-bad-{pid}");
    let missing = format!("Local\\filemap-cli-missing-{pid}");
    let mut holder = spawn(&["create", &held, "--size", "100"]);
    assert!(read_line(&mut holder).starts_with("created mapping"));
    let unsupported = "filemap: not supported on this platform: removing a name (Windows destroys an object with its last handle, and only then)";
    let table: &[(&[&str], String, i32)] = &[
        (
            &["read", "Bad\\x"],
            "filemap: invalid name 'Bad\\x': the only prefixes are Local\\ and Global\\".into(),
            1,
        ),
        (
            &["read", &missing],
            format!("filemap: no mapping named {missing}"),
            1,
        ),
        (
            &["info", &missing],
            format!("filemap: no object named {missing}"),
            1,
        ),
        (
            &["create", &missing, "--size", "0"],
            "filemap: invalid size: a mapping's size must be greater than 0".into(),
            1,
        ),
        (
            &["create", &held, "--size", "10"],
            format!("filemap: a mapping named {held} already exists"),
            1,
        ),
        (
            &["read", &held, "--offset", "200"],
            "filemap: range of 0 bytes at offset 200 does not fit in 100 bytes".into(),
            1,
        ),
        (
            &["create", &missing, "--size", "1", "--persistent"],
            "filemap: not supported on this platform: persistent objects (Windows destroys an object with its last handle)".into(),
            1,
        ),
        (
            &["signal", &held],
            format!("filemap: {held} is a mapping; signal sets events and releases semaphores"),
            1,
        ),
        (&["rm", &held], unsupported.into(), 1),
        (
            &["init"],
            "filemap: not supported on this platform: init (Windows has no namespace directories to set up)".into(),
            1,
        ),
        (
            &["read", &held, "--format", "base64"],
            "filemap: invalid value 'base64' for '--format <FORMAT>'".into(),
            2,
        ),
    ];
    for (args, message, code) in table {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr).replace("\r\n", "\n");
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(message.as_str()),
            "{args:?}:\n got: {err}\nwant: {message}"
        );
    }
    // Nothing was made by any of them, and the held mapping is intact.
    assert_eq!(run(&["read", &missing]).status.code(), Some(1));
    assert!(run(&["read", &held]).status.success());
    holder.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
}

/// The client reads a mapping that another program made with plain `CreateFileMappingW`,
/// as Microsoft's C# server does: no filemap record, so after a short wait for one it takes
/// the section's page-rounded size and reads the message.
#[test]
fn client_reads_a_mapping_made_by_another_program() {
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Memory::{
        CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, FILE_MAP_ALL_ACCESS, PAGE_READWRITE,
    };
    let name = format!("Local\\filemap-cli-foreign-{}", std::process::id());
    let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
    // SAFETY: a pagefile-backed section of 64 KiB; `wide` is NUL-terminated.
    let section = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            0,
            65536,
            wide.as_ptr(),
        )
    };
    assert!(!section.is_null(), "{}", std::io::Error::last_os_error());
    // SAFETY: maps the first 1 KiB of the live section read-write.
    let view = unsafe { MapViewOfFile(section, FILE_MAP_ALL_ACCESS, 0, 0, 1024) };
    assert!(!view.Value.is_null(), "{}", std::io::Error::last_os_error());
    let message: Vec<u16> = "Message from the first process."
        .encode_utf16()
        .chain([0])
        .collect();
    // SAFETY: 64 bytes into a private, live, writable 1 KiB view; nothing else writes it.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), view.Value.cast::<u16>(), message.len())
    };
    let start = std::time::Instant::now();
    let out = run(&["client", "--name", &name]);
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Read from the file mapping:\n\"Message from the first process.\"\n"),
        "{text}"
    );
    // It waited for a record that never came (a lower bound only).
    assert!(start.elapsed() >= std::time::Duration::from_millis(250));
    // SAFETY: the view and the handle are ours and still live.
    unsafe {
        UnmapViewOfFile(view);
        CloseHandle(section);
    }
}

/// write, read and reset on Windows.
#[test]
fn write_read_and_reset_on_windows() {
    let pid = std::process::id();
    let map = format!("Local\\filemap-cli-rw-{pid}");
    let mut holder = spawn(&["create", &map, "--size", "70000"]);
    assert!(read_line(&mut holder).starts_with("created mapping"));
    // Past the 64 KiB allocation granularity, from another process.
    assert!(run(&["write", &map, "--offset", "65540", "hello"])
        .status
        .success());
    let out = run(&[
        "read", &map, "--offset", "65540", "--len", "5", "--format", "raw",
    ]);
    assert_eq!(out.stdout, b"hello");
    // A manual-reset event stays set until `reset`.
    let event = format!("Local\\filemap-cli-reset-{pid}");
    let mut ev = spawn(&[
        "create",
        &event,
        "--kind",
        "event",
        "--manual-reset",
        "--set",
    ]);
    assert!(read_line(&mut ev).starts_with("created event"));
    for _ in 0..2 {
        assert!(run(&["wait", &event, "--timeout", "1"]).status.success());
    }
    assert!(run(&["reset", &event]).status.success());
    assert_eq!(
        run(&["wait", &event, "--timeout", "0.2"]).status.code(),
        Some(124)
    );
    for p in [&mut holder, &mut ev] {
        p.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        assert!(p.0.wait().unwrap().success());
    }
}

/// Not a test by itself: the command that `lock_on_windows_*` run under `lock`. With
/// `FILEMAP_TEST_COMMAND=ctrl-c` it prints its pid and exits with status 7 at Ctrl-C; with
/// `sleep`, it prints its pid and sleeps.
#[test]
fn command() {
    use windows_sys::core::BOOL;
    use windows_sys::Win32::Foundation::TRUE;
    use windows_sys::Win32::System::Console::SetConsoleCtrlHandler;
    unsafe extern "system" fn on_ctrl(_: u32) -> BOOL {
        std::process::exit(7)
    }
    match std::env::var("FILEMAP_TEST_COMMAND").as_deref() {
        Ok("ctrl-c") => {
            // SAFETY: `on_ctrl` has the signature of PHANDLER_ROUTINE and lives forever.
            unsafe { SetConsoleCtrlHandler(Some(on_ctrl), TRUE) };
        }
        Ok("sleep") => {}
        _ => return,
    }
    println!("@@ {}", std::process::id());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `lock NAME -- <this test binary as the command above>`, in a console of its own.
///
/// `lock` starting its command can hit the same transient Wine failure as the tests' own
/// spawns (see [`retry_wine`]): then `lock` exits 126 with `os error 1359`, and the whole
/// thing is tried again, a few times. Any other early end fails with `lock`'s stderr.
fn lock_running_command(mutex: &str, command: &str) -> (Reap, u32) {
    use std::os::windows::process::CommandExt;
    let me = std::env::current_exe().unwrap();
    let mut tries = 0;
    loop {
        tries += 1;
        let mut cmd = Command::new(EXE);
        cmd.args(["lock", mutex, "--"])
            .arg(&me)
            .args(["--exact", "command", "--nocapture", "--test-threads=1"])
            .env("FILEMAP_TEST_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .creation_flags(windows_sys::Win32::System::Threading::CREATE_NEW_CONSOLE);
        let mut lock = Reap(retry_wine(|| cmd.spawn()));
        // The test harness prints lines of its own first.
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        let stdout = lock.0.stdout.as_mut().unwrap();
        let pid = loop {
            if stdout.read(&mut b).unwrap() == 0 {
                break None;
            }
            out.push(b[0]);
            let text = String::from_utf8_lossy(&out);
            if let Some(pid) = text.split("@@ ").nth(1).and_then(|l| l.strip_suffix('\n')) {
                break Some(pid.trim().parse().unwrap());
            }
        };
        if let Some(pid) = pid {
            return (lock, pid);
        }
        let status = lock.0.wait().unwrap();
        let mut err = String::new();
        lock.0
            .stderr
            .as_mut()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        if status.code() == Some(126) && err.contains("os error 1359") && tries < 5 {
            eprintln!("lock could not start its command (Wine); retry {tries}");
            std::thread::sleep(std::time::Duration::from_millis(50 * tries));
            continue;
        }
        panic!(
            "the command ended first: lock {status:?}, stdout {:?}, stderr {err:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// Issue 8: Ctrl-C reaches `lock`'s command through the console and does not end `lock`,
/// which releases the mutex only after the command has ended.
#[test]
fn lock_on_windows_leaves_ctrl_c_to_its_command() {
    let mutex = format!("Local\\filemap-cli-lock-ctrl-c-{}", std::process::id());
    let mut holder = spawn(&["create", &mutex, "--kind", "mutex"]);
    assert!(read_line(&mut holder).starts_with("created mutex"));
    let (mut lock, _) = lock_running_command(&mutex, "ctrl-c");
    let status = ctrl_c(&mut lock);
    assert_eq!(status.code(), Some(7), "the command's status");
    // Released normally, not abandoned.
    let out = run(&["wait", &mutex, "--timeout", "5"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", out);
    holder.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
}

/// Issue 8: `lock` killed (TerminateProcess) takes its command with it: the command is in
/// a job that is killed when `lock`'s handle to it closes.
#[test]
fn lock_on_windows_killed_takes_its_command_along() {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, TerminateProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE, PROCESS_TERMINATE,
    };
    let mutex = format!("Local\\filemap-cli-lock-kill-{}", std::process::id());
    let mut holder = spawn(&["create", &mutex, "--kind", "mutex"]);
    assert!(read_line(&mut holder).starts_with("created mutex"));
    let (mut lock, pid) = lock_running_command(&mutex, "sleep");
    // SAFETY: a plain call with a process id.
    let command = unsafe { OpenProcess(PROCESS_SYNCHRONIZE | PROCESS_TERMINATE, 0, pid) };
    assert!(!command.is_null(), "{}", std::io::Error::last_os_error());
    lock.0.kill().unwrap();
    lock.0.wait().unwrap();
    // SAFETY: a live process handle, closed once. A command that outlived `lock` is ended
    // here, so that a failure does not leave it running.
    let ended = unsafe {
        let r = WaitForSingleObject(command, 20_000);
        if r != WAIT_OBJECT_0 {
            TerminateProcess(command, 1);
        }
        CloseHandle(command);
        r == WAIT_OBJECT_0
    };
    assert!(ended, "the command outlived lock");
    assert_eq!(
        run(&["wait", &mutex, "--timeout", "5"]).status.code(),
        Some(3)
    );
    holder.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
}

#[test]
fn send_and_recv_pipe_bytes_between_windows_processes() {
    let name = format!("Local\\filemap-cli-pipe-{}", std::process::id());
    let mut recv = spawn(&["recv", &name, "--follow"]);
    let mut send = spawn(&["send", &name]);
    let text: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("line {i} {}\n", "x".repeat((i % 90) as usize)).into_bytes())
        .collect();
    let mut w = send.0.stdin.take().unwrap();
    let input = text.clone();
    let writer = std::thread::spawn(move || w.write_all(&input).unwrap());
    let mut got = Vec::new();
    recv.0
        .stdout
        .as_mut()
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert!(send.0.wait().unwrap().success());
    assert!(recv.0.wait().unwrap().success());
    assert!(got == text, "{} bytes in, {} out", text.len(), got.len());
    // A channel holds its name: a mapping of the same name is another kind.
    let name = format!("{name}-b");
    let mut holder = spawn(&["create", &name, "--kind", "broadcast"]);
    assert!(read_line(&mut holder).starts_with("created broadcast"));
    let o = run(&["create", &name, "--size", "4096"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("broadcast"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `info NAME --json` as text.
fn info_json(name: &str) -> String {
    String::from_utf8_lossy(&run(&["info", name, "--json"]).stdout).into_owned()
}

/// Polls `info NAME --json` until it shows every one of `fields`; fails after 30 s.
fn info_until(name: &str, fields: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let info = info_json(name);
        if fields.iter().all(|f| info.contains(f)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{fields:?} in {info}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn info_shows_a_channels_capacity_queue_and_peers_on_windows() {
    let name = format!("Local\\filemap-cli-info-{}", std::process::id());
    let mut stream = spawn(&["create", &name, "--kind", "stream", "--capacity", "65536"]);
    assert!(read_line(&mut stream).starts_with("created stream"));
    // A producer that sends two lines, which nobody receives yet: queued.
    let mut send = spawn(&["send", &name]);
    send.0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    info_until(
        &name,
        &[
            "\"kind\":\"stream\"",
            "\"capacity\":65536",
            "\"queued\":2",
            "\"producer\":true",
            "\"peers\":0",
        ],
    );
    // A consumer that takes them and waits for more counts as a peer while it lives.
    let mut recv = spawn(&["recv", &name, "--count", "3", "--timeout", "30"]);
    info_until(&name, &["\"queued\":0", "\"peers\":1"]);
    let _ = recv.0.kill();
    let _ = recv.0.wait();
    info_until(&name, &["\"peers\":0"]);
    // The producer's input ends: it closes the stream and goes.
    drop(send.0.stdin.take());
    assert!(send.0.wait().unwrap().success());
    info_until(&name, &["\"producer\":false"]);
    stream.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(stream.0.wait().unwrap().success());
}

/// `ls` on Windows lists the session's objects, other processes' included, in columns that
/// Windows can fill, with a channel's state and without its role events; `ls --json` too.
#[test]
fn ls_lists_the_sessions_objects_on_windows() {
    let _listing = listing();
    let base = format!("Local\\filemap-cli-ls-{}", std::process::id());
    let (stream, event) = (format!("{base}-stream"), format!("{base}-event"));
    let mut s = spawn(&["create", &stream, "--kind", "stream", "--capacity", "8192"]);
    assert!(read_line(&mut s).starts_with("created stream"));
    let mut e = spawn(&["create", &event, "--kind", "event", "--manual-reset"]);
    assert!(read_line(&mut e).starts_with("created event"));
    // A producer process holds the stream's producer role (a role event).
    let mut send = spawn(&["send", &stream]);
    send.0.stdin.as_mut().unwrap().write_all(b"x\n").unwrap();
    info_until(&stream, &["\"queued\":1", "\"producer\":true"]);

    let out = run(&["ls"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let header = text.lines().next().unwrap();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        ["NAME", "KIND", "SIZE", "STATE", "DETAIL"],
        "{text}"
    );
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with(&base)).collect();
    assert_eq!(ours.len(), 2, "{text}");
    let fields = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(fields(ours[0]), format!("{event} event"), "{text}");
    assert_eq!(fields(ours[1]), format!("{stream} stream"), "{text}");
    assert!(ours[0].contains("not set, manual-reset"), "{text}");
    assert!(ours[1].contains("1 queued, 8192 bytes"), "{text}");
    assert!(!text.contains(":filemap-role-"), "{text}");
    // Only ours, by their prefix.
    let only = String::from_utf8_lossy(&run(&["ls", &base]).stdout).replace("\r\n", "\n");
    assert_eq!(only.lines().count(), 3, "{only}");
    // And by kind: the stream alone (its role events are no events of their own).
    let streams = String::from_utf8_lossy(&run(&["ls", &base, "--kind", "stream"]).stdout)
        .replace("\r\n", "\n");
    assert_eq!(streams.lines().count(), 2, "{streams}");
    assert!(streams.contains(&stream), "{streams}");

    let json = String::from_utf8_lossy(&run(&["ls", "--json"]).stdout).into_owned();
    for want in [
        format!(
            "\"name\":\"{}\",\"kind\":\"stream\"",
            stream.replace('\\', "\\\\")
        ),
        "\"capacity\":8192,\"max_message\"".to_owned(),
        format!(
            "\"name\":\"{}\",\"kind\":\"event\"",
            event.replace('\\', "\\\\")
        ),
    ] {
        assert!(json.contains(&want), "{want} in {json}");
    }
    // `send` waits at the end of its input until its message is received: stop it.
    let _ = send.0.kill();
    let _ = send.0.wait();
    for p in [&mut s, &mut e] {
        p.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        assert!(p.0.wait().unwrap().success());
    }
}

/// `call` and `serve` between Windows processes: each request runs the command, whose
/// output is the reply; Ctrl-C ends `serve` cleanly, and a waiting client is told.
///
/// `serve` starts a process per request, which can hit Wine's transient `CreateProcess`
/// failure (see [`retry_wine`]): then it exits 126 with `os error 1359`, and the first
/// part is tried again under a new name, a few times.
#[test]
fn call_and_serve_between_windows_processes() {
    let name = format!("Local\\filemap-cli-rpc-{}", std::process::id());
    for tries in 1.. {
        let name = format!("{name}-{tries}");
        // The client first: it makes the channel and waits for the server.
        let mut early = spawn(&["call", &name, "ping"]);
        let mut serve = spawn(&[
            "serve", &name, "--count", "3", "--", "cmd", "/c", "echo", "pong",
        ]);
        let mut got = String::new();
        let stdout = early.0.stdout.as_mut().unwrap();
        stdout.read_to_string(&mut got).unwrap();
        let early_ok = early.0.wait().unwrap().success();
        let o = run(&["call", &name, "a", "b", "--timeout", "20"]);
        let status = serve.0.wait().unwrap();
        let mut err = String::new();
        let stderr = serve.0.stderr.as_mut().unwrap();
        stderr.read_to_string(&mut err).unwrap();
        if status.code() == Some(126) && err.contains("os error 1359") && tries < 5 {
            eprintln!("serve could not start its command (Wine); retry {tries}");
            continue;
        }
        assert!(early_ok && status.success(), "serve {status:?}: {err}");
        assert_eq!(got, "pong\r\n");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // --count 3: it closed the channel after the third answer and exited 0.
        assert_eq!(String::from_utf8_lossy(&o.stdout), "pong\r\npong\r\n");
        break;
    }
    // Ctrl-C: the server closes the channel and exits 0; a client that then waits on a
    // handle still open is told that the server closed it.
    let mut holder = spawn(&["create", &name, "--kind", "request-reply"]);
    assert!(read_line(&mut holder).starts_with("created request-reply"));
    let mut serve = spawn_in_own_console(&["serve", &name, "--", "cmd", "/c", "echo", "pong"]);
    info_until(&name, &["\"producer\":true"]);
    let status = ctrl_c(&mut serve);
    assert!(status.success(), "{status:?}");
    let o = run(&["call", &name, "late", "--timeout", "10"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("closed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    holder.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
}

/// `info --holders` names the process that holds an object; plain `info` does not look.
#[test]
fn info_holders_names_the_holding_process_on_windows() {
    let _counting = not_listing();
    let name = format!("Local\\filemap-cli-holders-{}", std::process::id());
    let mut holder = spawn(&["create", &name, "--kind", "semaphore", "--initial", "1"]);
    assert!(read_line(&mut holder).starts_with("created semaphore"));
    let pid = holder.0.id();
    let text = |args: &[&str]| String::from_utf8_lossy(&run(args).stdout).replace("\r\n", "\n");
    let info = text(&["info", &name, "--holders"]);
    assert!(info.contains(&format!("\nholders:     {pid}\n")), "{info}");
    assert!(!text(&["info", &name]).contains("holders:"));
    let json = text(&["info", &name, "--holders", "--json"]);
    assert!(json.contains(&format!("\"holders\":[{pid}]")), "{json}");
    holder.0.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.0.wait().unwrap().success());
}
