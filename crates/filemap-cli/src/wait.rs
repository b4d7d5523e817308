//! Waiting for ENTER, end of input, SIGINT, SIGTERM or SIGHUP (on Windows: Ctrl-C,
//! Ctrl-Break or closing the console), whichever comes first, so that the sample's programs
//! clean up in every case, with or without a terminal.
#![allow(unsafe_code)]

use std::io::BufRead;
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

/// Blocks until ENTER, end of input or a termination signal.
///
/// Must be called while the process has one thread: it blocks the termination signals in
/// the calling thread so that the threads it starts inherit the mask, and one of them takes
/// the signal with `sigwait`.
pub(crate) fn wait_for_enter_or_signal() -> Wake {
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
    rx.recv().unwrap_or(Wake::EndOfInput)
}

#[cfg(target_os = "linux")]
mod signals {
    use std::ffi::c_int;
    use std::sync::mpsc::Sender;

    use super::Wake;

    /// glibc's and musl's `sigset_t`: 1024 bits.
    #[repr(C)]
    struct SigSet([u64; 16]);

    extern "C" {
        fn sigemptyset(set: *mut SigSet) -> c_int;
        fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
        fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
        fn sigwait(set: *const SigSet, sig: *mut c_int) -> c_int;
    }

    const SIG_BLOCK: c_int = 0;
    const SIGHUP: c_int = 1;
    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;

    fn termination_set() -> SigSet {
        let mut set = SigSet([0; 16]);
        // SAFETY: `set` is a valid, writable sigset_t-sized buffer; the signal numbers are
        // valid on Linux.
        unsafe {
            sigemptyset(&mut set);
            for sig in [SIGHUP, SIGINT, SIGTERM] {
                sigaddset(&mut set, sig);
            }
        }
        set
    }

    pub(super) const HOW_TO_STOP: &str = "press ENTER (or send SIGINT/SIGTERM, or close input)";

    pub(super) fn describe(sig: i32) -> String {
        match sig {
            SIGHUP => "SIGHUP".to_owned(),
            SIGINT => "SIGINT".to_owned(),
            SIGTERM => "SIGTERM".to_owned(),
            n => format!("signal {n}"),
        }
    }

    pub(super) fn spawn_waiter(tx: Sender<Wake>) {
        let set = termination_set();
        // SAFETY: blocking signals in this thread only changes how they are delivered; the
        // set is initialised and `old` may be null.
        unsafe { pthread_sigmask(SIG_BLOCK, &set, std::ptr::null_mut()) };
        std::thread::spawn(move || {
            let mut sig: c_int = 0;
            // SAFETY: `set` and `sig` are valid for the call; every thread has the signals
            // blocked, so sigwait is the one that takes them.
            let rc = unsafe { sigwait(&set, &mut sig) };
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
