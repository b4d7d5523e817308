//! Windows-style named file mappings for Rust: `CreateFileMapping` / `OpenFileMapping` /
//! `MapViewOfFile` semantics, natively on Linux and on Windows.
//!
//! - **Names** are `Local\NAME`, `Global\NAME` or a bare `NAME` (see [`Name`]). On Linux,
//!   `Local\` is private to the current user and `Global\` is shared by the machine.
//! - **One namespace** for every kind of object ([`Kind`]): a name held by one kind cannot be
//!   taken by another ([`Error::KindMismatch`], Windows' `ERROR_INVALID_HANDLE`).
//! - **create, open_or_create, open**: [`FileMapping::open_or_create`] reports whether the
//!   object already existed ([`FileMapping::already_existed`]), like `ERROR_ALREADY_EXISTS`.
//! - **Lifetime follows Windows**: a name exists while any process holds a handle, and is
//!   gone when the last one closes, also if every holder died by SIGKILL. A mapping's
//!   memory lasts as long as its last handle or view.
//!   Persistent objects are an explicit opt-in ([`Options::persistent`]). On Linux, a
//!   child that `fork`s without `exec` inherits copies of its parent's handles; dropping
//!   them in the child leaves the parent's handles, names and channel ends alone (the
//!   README's **fork** paragraph has the details and the limits).
//! - **Views** at any offset, read-only, read-write or copy-on-write ([`View`]). Memory that
//!   another process can write is never handed out as a safe `&[u8]`: views offer
//!   copy-in/copy-out, atomics, raw pointers and `unsafe` slices.
//!
//! # Example
//!
//! ```
//! # fn main() -> filemap::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("filemap-doc-{}", std::process::id()));
//! # let ns = filemap::Namespace::at(&dir);
//! use filemap::{Access, FileMapping, Options};
//!
//! // The server: a 64 KiB mapping named Local\SampleMap, and a 1 KiB view at offset 0.
//! let server = Options::new().namespace(ns.clone()).open_or_create("Local\\SampleMap", 65536)?;
//! assert!(!server.already_existed());
//! let view = server.map_view(Access::ReadWrite, 0, 1024)?;
//! view.write_at(0, b"M\0e\0s\0s\0a\0g\0e\0\0\0")?;
//!
//! // The client (usually another process): open read-only and read it back.
//! let client = Options::new().namespace(ns.clone()).open("Local\\SampleMap", Access::Read)?;
//! assert_eq!(client.size(), 65536);
//! let mut buf = [0u8; 16];
//! client.map_view(Access::Read, 0, 0)?.read_at(0, &mut buf)?;
//! assert_eq!(&buf[..4], b"M\0e\0");
//!
//! drop((view, server, client)); // the last handle closes: the mapping is gone
//! assert!(matches!(
//!     Options::new().namespace(ns.clone()).open("Local\\SampleMap", Access::Read),
//!     Err(filemap::Error::NotFound { .. })
//! ));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! # Linux layout
//!
//! Objects are files on tmpfs under a root, `/dev/shm/filemap` unless the environment
//! variable `FILEMAP_ROOT` names another absolute path:
//! `<root>/local-<uid>/<file name>` for `Local\` and `<root>/global/<file name>` for
//! `Global\`, with file names as described in [`Name`]. A mapping's bytes start at offset 0
//! of its file ([`FileMapping::os_path`]), followed by a 4 KiB record (kind, exact size,
//! flags). See the README for the full protocol, which other languages can follow.
#![deny(unsafe_code)]
#![deny(missing_docs)]

/// The atomics (and the spin-loop hint) of the pure algorithms: `crates/filemap-loom`
/// compiles those with loom's instead.
mod atomic {
    pub(crate) use std::hint::spin_loop;
    pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
}
mod channel;
mod error;
mod layout;
mod mapping;
mod name;
mod namespace;
mod sha256;
mod sync;
mod sys;
mod view;

/// Unit tests' helpers.
#[cfg(all(test, not(loom)))]
mod testing {
    use std::io::Write;
    use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
    use std::time::Duration;

    /// Aborts the test process unless dropped within its time: a unit test whose threads
    /// wait for each other would otherwise hang the whole run (and CI with it).
    pub(crate) struct Watchdog(#[allow(dead_code)] Option<Sender<()>>);

    /// A [`Watchdog`] of `secs` seconds for the calling test, which it names by its thread
    /// (the harness names each test's thread after the test); none under Miri, whose clock
    /// is not the wall's.
    pub(crate) fn watchdog(secs: u64) -> Watchdog {
        if cfg!(miri) {
            return Watchdog(None);
        }
        let name = std::thread::current().name().unwrap_or("a test").to_owned();
        let (tx, rx) = channel::<()>();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
                // Straight to stderr: the test harness captures `eprintln!`, and an abort
                // loses what it captured.
                let _ = writeln!(
                    std::io::stderr(),
                    "{name}: still running after {secs} s; aborting"
                );
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

pub use channel::{
    Broadcast, DetachedLoan, DetachedMessage, Latest, LatestReader, LatestWriter, Loan, Message,
    Peer, Plain, Publisher, Receiver, Replier, RequestReply, RpcClient, RpcServer, Sender,
    SlotLoan, Stream, Subscriber, Ticket, TrySendError, WaitStrategy, DEFAULT_CAPACITY,
};
pub use error::{Error, Result};
pub use layout::Kind;
pub use mapping::{Access, FileMapping, Options};
pub use name::{Name, Scope};
pub use namespace::{GcReport, InitReport, Listing, Namespace, ObjectInfo, Refused, SyncState};
pub use sync::{
    wait_any, Event, Lock, Mutex, MutexGuard, Semaphore, WaitOutcome, Waitable, MAX_WAIT_OBJECTS,
};
pub use view::View;

/// The name of the user `uid`, if the system knows one (Linux: `getpwuid_r`, so users from
/// LDAP or sssd count; elsewhere `None`).
pub fn user_name(uid: u32) -> Option<String> {
    sys::user_name(uid)
}
