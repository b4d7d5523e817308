//! Signals and console events:
//!
//! - waiting for ENTER, end of input, SIGINT, SIGTERM or SIGHUP (on Windows: Ctrl-C,
//!   Ctrl-Break or closing the console), whichever comes first, so that the sample's
//!   programs clean up in every case, with or without a terminal;
//! - running `lock`'s command so that it never outlives `lock`, which holds the mutex for it
//!   ([`run_guarded`]), and `serve`'s commands so that none outlives `serve`
//!   ([`spawn_tied`]);
//! - taking those signals in a loop that stops between its steps ([`Stop`]).
#![allow(unsafe_code)]

use std::io::BufRead;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;

/// Why the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    Enter,
    EndOfInput,
    /// A termination signal on Linux, or a console control event on Windows
    /// (`CTRL_C_EVENT` = 0, `CTRL_BREAK_EVENT` = 1, `CTRL_CLOSE_EVENT` = 2, ...).
    #[cfg_attr(not(any(target_os = "linux", windows)), allow(dead_code))]
    Signal(i32),
}

impl Wake {
    /// What ended the wait, for messages: `SIGTERM`, `Ctrl-C`, ...
    pub(crate) fn describe(self) -> String {
        match self {
            Wake::Enter => "ENTER".to_owned(),
            Wake::EndOfInput => "end of input".to_owned(),
            Wake::Signal(n) => signals::describe(n),
        }
    }
}

/// How to end the wait, for prompts.
pub(crate) const HOW_TO_STOP: &str = signals::HOW_TO_STOP;

/// A wait for ENTER, end of input or a termination signal, started before the prompt that
/// announces it: the signals are taken from the moment it starts, so that one sent right
/// after the prompt is not lost (nor does it kill the process).
#[derive(Debug)]
pub(crate) struct Waiter {
    rx: mpsc::Receiver<Wake>,
}

impl Waiter {
    /// Starts watching. Must be called before the process starts threads of its own that
    /// could take a signal: it blocks the termination signals in the calling thread so
    /// that the threads it starts inherit the mask, and one of them takes the signal with
    /// `sigwait`. (The library's mutex sentinel threads block every signal, so they may
    /// exist already.)
    pub(crate) fn start() -> Waiter {
        let (tx, rx) = mpsc::channel();
        signals::spawn_waiter(tx.clone());
        std::thread::spawn(move || {
            let mut line = String::new();
            let wake = match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => Wake::EndOfInput,
                Ok(_) => Wake::Enter,
            };
            let _ = tx.send(wake);
        });
        Waiter { rx }
    }

    /// Blocks until ENTER, end of input or a termination signal.
    pub(crate) fn wait(self) -> Wake {
        self.rx.recv().unwrap_or(Wake::EndOfInput)
    }
}

/// Termination signals (on Windows: console control events) taken from the moment it
/// starts, for a loop that looks between its steps ([`Stop::requested`]) instead of
/// dying at once: `serve` finishes the request at hand, then closes the channel cleanly.
/// Standard input is left alone.
#[derive(Debug)]
pub(crate) struct Stop {
    rx: mpsc::Receiver<Wake>,
}

impl Stop {
    /// Starts watching; as for [`Waiter::start`], before the process starts threads of its
    /// own that could take a signal.
    pub(crate) fn start() -> Stop {
        let (tx, rx) = mpsc::channel();
        signals::spawn_waiter(tx);
        Stop { rx }
    }

    /// The signal that came, if one did.
    pub(crate) fn requested(&self) -> Option<Wake> {
        self.rx.try_recv().ok()
    }
}

/// Runs `cmd` to its end as a child that cannot outlive this process, and returns its
/// status.
///
/// - Linux: the termination signals (SIGINT, SIGTERM, SIGHUP) sent to this process are
///   passed on to the child instead of ending this process; the ones a terminal sends to
///   the whole foreground group reach the child by themselves and are not sent twice. If
///   this process dies anyway (SIGKILL), the kernel kills the child with SIGKILL
///   (`PR_SET_PDEATHSIG`).
/// - Windows: Ctrl-C and Ctrl-Break reach the child through the console and no longer end
///   this process; the child is in a job that is killed when this process ends.
pub(crate) fn run_guarded(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    guard::run(cmd)
}

/// Starts `cmd` as a child that cannot outlive this process (as in [`run_guarded`]), with
/// signals left as they are.
pub(crate) fn spawn_tied(cmd: &mut Command) -> std::io::Result<Child> {
    guard::spawn_tied(cmd)
}

#[cfg(target_os = "linux")]
mod guard {
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, ExitStatus};
    use std::sync::{Arc, Mutex};

    use super::signals;

    /// The child's pid once it runs, and the signals that came before.
    #[derive(Default)]
    struct Forward {
        pid: Option<libc::pid_t>,
        pending: Vec<libc::c_int>,
    }

    fn send(pid: libc::pid_t, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }

    pub(super) fn run(cmd: &mut Command) -> std::io::Result<ExitStatus> {
        let set = signals::termination_set();
        // From here on, no thread of ours dies of these signals: one thread takes them.
        signals::block(&set);
        let forward = Arc::new(Mutex::new(Forward::default()));
        let f = forward.clone();
        std::thread::spawn(move || loop {
            // SAFETY: an all-zero siginfo_t is a valid buffer for sigwaitinfo to fill.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `set` and `info` are valid for the call.
            let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
            if sig < 0 {
                continue; // EINTR
            }
            // A terminal sends SIGINT/SIGHUP to its whole foreground group, the child
            // included: those come from the kernel and need no forwarding.
            if info.si_code == libc::SI_KERNEL {
                continue;
            }
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            match f.pid {
                Some(pid) => send(pid, sig),
                None => f.pending.push(sig),
            }
        });
        let mut child = spawn_tied(cmd)?;
        {
            let mut f = forward.lock().unwrap_or_else(|e| e.into_inner());
            let pid = child.id() as libc::pid_t;
            f.pid = Some(pid);
            for sig in std::mem::take(&mut f.pending) {
                send(pid, sig);
            }
        }
        child.wait()
    }

    /// Starts `cmd` as a child that the kernel kills with SIGKILL if this process dies.
    pub(super) fn spawn_tied(cmd: &mut Command) -> std::io::Result<Child> {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes system calls (prctl, getppid), which are
        // async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the line above: then nobody would kill
                // us, so do not start at all.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
}

#[cfg(windows)]
mod guard {
    use std::os::windows::io::AsRawHandle;
    use std::process::{Child, Command, ExitStatus};
    use std::sync::OnceLock;

    use windows_sys::core::BOOL;
    use windows_sys::Win32::Foundation::{FALSE, HANDLE, TRUE};
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_C_EVENT,
    };
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
        SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    };

    /// Ctrl-C and Ctrl-Break are the child's to handle: it shares our console.
    unsafe extern "system" fn leave_to_child(ctrl: u32) -> BOOL {
        if ctrl == CTRL_C_EVENT || ctrl == CTRL_BREAK_EVENT {
            TRUE
        } else {
            FALSE
        }
    }

    pub(super) fn run(cmd: &mut Command) -> std::io::Result<ExitStatus> {
        // SAFETY: `leave_to_child` has the signature of PHANDLER_ROUTINE and lives for the
        // whole process.
        unsafe { SetConsoleCtrlHandler(Some(leave_to_child), TRUE) };
        spawn_tied(cmd)?.wait()
    }

    /// Starts `cmd` as a child in a job that is killed when this process ends.
    pub(super) fn spawn_tied(cmd: &mut Command) -> std::io::Result<Child> {
        // One job for all our children (`serve` starts one per request), made at the first.
        static JOB: OnceLock<usize> = OnceLock::new();
        let job = *JOB.get_or_init(|| {
            // SAFETY: null attributes and name make an anonymous job.
            let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
            if !job.is_null() {
                let mut info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
                info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
                // SAFETY: `info` is the structure this information class takes, of its
                // size.
                unsafe {
                    SetInformationJobObject(
                        job,
                        JobObjectExtendedLimitInformation,
                        (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                        std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                    )
                };
            }
            job as usize
        }) as HANDLE;
        let child = cmd.spawn()?;
        if !job.is_null() {
            // The job handle stays open until this process ends, and its end kills the
            // child if it still runs.
            // SAFETY: both handles are live.
            unsafe { AssignProcessToJobObject(job, child.as_raw_handle()) };
        }
        Ok(child)
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod guard {
    use std::process::{Child, Command, ExitStatus};

    pub(super) fn run(cmd: &mut Command) -> std::io::Result<ExitStatus> {
        cmd.status()
    }

    pub(super) fn spawn_tied(cmd: &mut Command) -> std::io::Result<Child> {
        cmd.spawn()
    }
}

#[cfg(target_os = "linux")]
mod signals {
    use std::sync::mpsc::Sender;

    use super::Wake;

    /// The signals that end a wait (and that `lock` forwards to its command).
    pub(super) const TERMINATION: [i32; 3] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM];

    pub(super) fn termination_set() -> libc::sigset_t {
        // SAFETY: sigemptyset initialises the zeroed set; the signal numbers are valid.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in TERMINATION {
                libc::sigaddset(&mut set, sig);
            }
            set
        }
    }

    /// Blocks the termination signals in the calling thread (and the threads it starts
    /// later), so that one thread can take them with `sigwait`.
    pub(super) fn block(set: &libc::sigset_t) {
        // SAFETY: `set` is initialised; `old` may be null.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    }

    pub(super) const HOW_TO_STOP: &str = "press ENTER (or send SIGINT/SIGTERM, or close input)";

    pub(super) fn describe(sig: i32) -> String {
        match sig {
            libc::SIGHUP => "SIGHUP".to_owned(),
            libc::SIGINT => "SIGINT".to_owned(),
            libc::SIGTERM => "SIGTERM".to_owned(),
            n => format!("signal {n}"),
        }
    }

    pub(super) fn spawn_waiter(tx: Sender<Wake>) {
        let set = termination_set();
        block(&set);
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` and `sig` are valid for the call; every thread has the signals
            // blocked, so sigwait is the one that takes them.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                let _ = tx.send(Wake::Signal(sig));
            }
        });
    }
}

#[cfg(windows)]
mod signals {
    use std::sync::mpsc::Sender;
    use std::sync::{Mutex, Once};
    use std::time::Duration;

    use windows_sys::core::BOOL;
    use windows_sys::Win32::Foundation::TRUE;
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_LOGOFF_EVENT,
        CTRL_SHUTDOWN_EVENT,
    };

    use super::Wake;

    /// The current wait's channel; each wait replaces it.
    static WAITER: Mutex<Option<Sender<Wake>>> = Mutex::new(None);
    static INSTALL: Once = Once::new();

    /// Runs on a thread that Windows starts for each console control event.
    unsafe extern "system" fn handler(ctrl: u32) -> BOOL {
        if let Ok(waiter) = WAITER.lock() {
            if let Some(tx) = waiter.as_ref() {
                let _ = tx.send(Wake::Signal(ctrl as i32));
            }
        }
        if ctrl != CTRL_C_EVENT && ctrl != CTRL_BREAK_EVENT {
            // Close, logoff and shutdown end the process as soon as this returns: give the
            // main thread the few seconds Windows allows to clean up and exit by itself.
            std::thread::sleep(Duration::from_secs(4));
        }
        TRUE
    }

    pub(super) const HOW_TO_STOP: &str = "press ENTER (or Ctrl-C, or close input)";

    pub(super) fn describe(ctrl: i32) -> String {
        match ctrl as u32 {
            CTRL_C_EVENT => "Ctrl-C".to_owned(),
            CTRL_BREAK_EVENT => "Ctrl-Break".to_owned(),
            CTRL_CLOSE_EVENT => "console closed".to_owned(),
            CTRL_LOGOFF_EVENT => "logoff".to_owned(),
            CTRL_SHUTDOWN_EVENT => "shutdown".to_owned(),
            n => format!("console event {n}"),
        }
    }

    pub(super) fn spawn_waiter(tx: Sender<Wake>) {
        if let Ok(mut waiter) = WAITER.lock() {
            *waiter = Some(tx);
        }
        INSTALL.call_once(|| {
            // SAFETY: `handler` has the signature of PHANDLER_ROUTINE and, being a plain
            // function, stays valid for the life of the process.
            unsafe { SetConsoleCtrlHandler(Some(handler), TRUE) };
        });
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod signals {
    use std::sync::mpsc::Sender;

    use super::Wake;

    pub(super) const HOW_TO_STOP: &str = "press ENTER (or close input)";

    pub(super) fn describe(sig: i32) -> String {
        format!("signal {sig}")
    }

    /// Without a backend for this platform, only ENTER and end of input end the wait.
    pub(super) fn spawn_waiter(_tx: Sender<Wake>) {}
}
