//! The namespace root, and listing, inspecting and cleaning up objects.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{sys, Kind, Name, Result};

/// Where objects live: the root of the `Local\` and `Global\` namespaces.
///
/// [`Namespace::new`] uses the environment variable `FILEMAP_ROOT` if it is set, and
/// otherwise `/dev/shm/filemap` on Linux. [`Namespace::at`] picks a root explicitly, for
/// containers and tests. On Windows (later) the kernel's object namespace is used and the
/// root is ignored.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    root: Option<PathBuf>,
}

impl Namespace {
    /// The environment variable that overrides the default root.
    pub const ROOT_ENV: &'static str = "FILEMAP_ROOT";

    /// The default namespace (`FILEMAP_ROOT`, or the platform default).
    #[must_use]
    pub fn new() -> Namespace {
        Namespace { root: None }
    }

    /// A namespace rooted at `root`, an absolute path. The directory is created (mode 1777,
    /// like `/tmp`) on first use if it does not exist.
    #[must_use]
    pub fn at(root: impl Into<PathBuf>) -> Namespace {
        Namespace {
            root: Some(root.into()),
        }
    }

    /// The root directory this namespace resolves to now.
    pub fn root(&self) -> PathBuf {
        self.root_now().into_owned()
    }

    /// [`Namespace::root`], borrowed when the root was given (no allocation per open).
    pub(crate) fn root_now(&self) -> std::borrow::Cow<'_, Path> {
        if let Some(root) = &self.root {
            return root.into();
        }
        match std::env::var_os(Self::ROOT_ENV) {
            Some(r) if !r.is_empty() => PathBuf::from(r).into(),
            _ => sys::default_root().into(),
        }
    }

    /// Creates the shared directories: the root and the `Global\` namespace (mode 1777,
    /// like `/tmp`). Your `Local\` directory is made on first use.
    ///
    /// On a machine with several users, let root run this once (`sudo filemap init`, or at
    /// boot, since `/dev/shm` is emptied on reboot). filemap refuses a shared directory
    /// owned by another ordinary user, who could rename or replace every entry in it. Run
    /// by root, `init` takes such directories over (owner root, mode 1777), and names the
    /// entries that it cannot repair, with the command that removes them; it never removes
    /// anything itself.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Insecure`] if existing directories fail their checks (for a caller
    /// other than root) or are not directories;
    /// [`crate::Error::Unsupported`] on Windows, which has no namespace directories.
    pub fn init(&self) -> Result<InitReport> {
        let (global, repaired, to_remove) = sys::admin::init(&self.root())?;
        Ok(InitReport {
            global,
            repaired,
            to_remove,
        })
    }

    /// Every object in your `Local\` namespace and in `Global\`, sorted by name within each.
    /// Stale objects (every holder gone) are listed with `live: Some(false)` and left alone.
    ///
    /// On Windows: the mappings, channels, mutexes, semaphores and events in the session's
    /// object directory (`\Sessions\N\BaseNamedObjects`, `Local\`) and in
    /// `\BaseNamedObjects` (`Global\`), other programs' and Windows' own included, each
    /// described as [`Namespace::info`] describes it. A channel's role events and wait
    /// semaphores are part of it and not listed.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Insecure`] if a namespace directory fails its checks; I/O errors
    /// (Windows: the session's directory cannot be read).
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        Ok(self.list_all()?.objects)
    }

    /// [`Namespace::list`], plus the entries of the namespace directories that are not
    /// filemap objects and were left alone: symlinks, FIFOs, directories, files with
    /// other names (hard links), junk. Another user may plant them in `Global\`; they are
    /// never opened, and never make the listing fail.
    ///
    /// # Errors
    ///
    /// As for [`Namespace::list`].
    pub fn list_all(&self) -> Result<Listing> {
        let (objects, refused) = sys::admin::list(&self.root())?;
        Ok(Listing { objects, refused })
    }

    /// What is known about one object. On Windows: its kind, a mapping's exact size (and
    /// creator and creation time, if filemap made it), a synchronization object's state,
    /// and the number of open handles; no owner, mode, path or holders' pids.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotFound`] (with no kind) if nothing has that name.
    pub fn info(&self, name: &str) -> Result<ObjectInfo> {
        sys::admin::info(&self.root(), &Name::parse(name)?)
    }

    /// The processes that hold `name` now, sorted: on Linux, [`ObjectInfo::holders`] as
    /// [`Namespace::info`] gives them. On Windows, which has no call for this, the
    /// processes holding a handle to it among those that this process may open to
    /// duplicate handles from (itself, and as a rule the same user's processes that are not
    /// elevated or protected), found as Process Explorer finds them: every handle of the
    /// object's type in those processes is duplicated, with no access rights, compared
    /// with ours and closed. For those microseconds each duplicate keeps its object alive,
    /// as any program's handle may; hence this is a call of its own, which `info` and
    /// `list` never make. The handle that this call opens to look does not count.
    ///
    /// # Errors
    ///
    /// As for [`Namespace::info`].
    pub fn holders(&self, name: &str) -> Result<Vec<u32>> {
        sys::admin::holders(&self.root(), &Name::parse(name)?)
    }

    /// The kind of the object that holds `name`; cheaper than [`Namespace::info`].
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotFound`] if nothing has that name;
    /// [`crate::Error::PermissionDenied`] if the object cannot be read.
    pub fn kind(&self, name: &str) -> Result<Kind> {
        sys::admin::kind(&self.root(), &Name::parse(name)?)
    }

    /// Removes a name, as `shm_unlink` does: new opens fail with `NotFound`, while current
    /// holders keep their object until they close it. This is the only way to remove a
    /// persistent object.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotFound`] if nothing has that name;
    /// [`crate::Error::PermissionDenied`] for another user's `Global\` object;
    /// [`crate::Error::Unsupported`] on Windows, where only the kernel deletes objects.
    pub fn remove(&self, name: &str) -> Result<()> {
        sys::admin::remove(&self.root(), &Name::parse(name)?)
    }

    /// Removes every stale object (one whose holders all closed or died) in your `Local\`
    /// namespace and in `Global\`, and returns their names. Live and persistent objects
    /// are left alone. Every open and create does this for its own name already.
    ///
    /// # Errors
    ///
    /// As for [`Namespace::list`].
    pub fn gc(&self) -> Result<Vec<Name>> {
        Ok(self.gc_all()?.removed)
    }

    /// [`Namespace::gc`], plus the entries that it left alone because they are not
    /// filemap objects (see [`Namespace::list_all`]).
    ///
    /// # Errors
    ///
    /// As for [`Namespace::list`].
    pub fn gc_all(&self) -> Result<GcReport> {
        let (removed, corrupt, refused) = sys::admin::gc(&self.root())?;
        Ok(GcReport {
            removed,
            corrupt,
            refused,
        })
    }
}

/// What [`Namespace::init`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitReport {
    /// The `Global\` directory.
    pub global: PathBuf,
    /// What root's `init` changed: directories it took over, modes it fixed.
    pub repaired: Vec<String>,
    /// Entries that it could not repair, each with the command that removes it.
    pub to_remove: Vec<String>,
}

/// What [`Namespace::list_all`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Listing {
    /// The objects, as [`Namespace::list`] gives them.
    pub objects: Vec<ObjectInfo>,
    /// The other entries, left alone.
    pub refused: Vec<Refused>,
}

/// What [`Namespace::gc_all`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GcReport {
    /// The stale objects it removed.
    pub removed: Vec<Name>,
    /// The corrupt object files it removed (truncated, or with a record that is not
    /// filemap's), each with what was wrong. Only files that nobody holds, that have a
    /// filemap file name and one link, and that you own (root's gc removes no other
    /// user's file).
    pub corrupt: Vec<Refused>,
    /// The entries that are not filemap objects, left alone.
    pub refused: Vec<Refused>,
}

/// An entry of a namespace directory that is not a filemap object, and that filemap
/// therefore never opens or removes: a symlink, a FIFO, a directory, a file with more than
/// one name (a hard link to an object), a file whose name or record is not filemap's, or
/// (in `Local\`) a file owned by someone else.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Refused {
    /// Its path.
    pub os_path: PathBuf,
    /// The name its file name stands for, if it is a valid encoded name.
    pub name: Option<Name>,
    /// The uid of its owner.
    pub owner_uid: Option<u32>,
    /// Its permission bits.
    pub mode: Option<u32>,
    /// Why it was left alone, in plain words ("a symlink").
    pub reason: String,
}

/// A description of one object, from [`Namespace::list`] or [`Namespace::info`].
///
/// Fields that could not be read (another user's object that you may not open), or that
/// the platform does not have (Windows objects have no uid, mode or file), are `None`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The object's name.
    pub name: Name,
    /// Its kind.
    pub kind: Option<Kind>,
    /// The exact size that openers see, in bytes.
    pub size: Option<u64>,
    /// The uid of the owner of its file (Linux).
    pub owner_uid: Option<u32>,
    /// The permission bits of its file (Linux).
    pub mode: Option<u32>,
    /// Whether any process holds it. `Some(false)` means stale: the next operation on the
    /// name, or [`Namespace::gc`], removes it (unless it is persistent).
    pub live: Option<bool>,
    /// Whether it outlives its holders.
    pub persistent: bool,
    /// Whether it maps a file (its `os_path` is then that file).
    pub file_backed: bool,
    /// The process that created it.
    pub creator_pid: Option<u32>,
    /// When it was created.
    pub created: Option<SystemTime>,
    /// The processes that hold it now, sorted (Linux: the pids that the holders' locks
    /// carry, which a holder that may read the object writes itself, so they are
    /// information, not proof. Windows: empty, as `info` and `list` leave it; see
    /// [`Namespace::holders`]).
    pub holders: Vec<u32>,
    /// How many handles to it are open in all processes, not counting the one `info`
    /// opened to look (on Linux, counted up to 4096).
    pub handles: Option<u32>,
    /// The file that stands for the object in the namespace (Linux).
    pub os_path: Option<PathBuf>,
    /// The state of a mutex, semaphore or event, when it could be read.
    pub state: Option<SyncState>,
}

/// The state of a synchronization object, as `ls` and `info` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncState {
    /// A mutex.
    Mutex {
        /// Whether a thread owns it.
        owned: bool,
        /// The process whose thread owns it, when the OS tells (Linux).
        owner_pid: Option<u32>,
        /// Whether that process is gone: the next locker gets the mutex as abandoned.
        abandoned: bool,
    },
    /// A semaphore.
    Semaphore {
        /// The current count.
        count: u32,
        /// The maximum count.
        max: u32,
    },
    /// An event.
    Event {
        /// Whether it is signalled.
        set: bool,
        /// Whether it stays signalled until reset (otherwise one waiter resets it).
        manual_reset: bool,
    },
    /// A channel.
    Channel {
        /// Its kind: [`Kind::Stream`], `Broadcast`, `Latest` or
        /// `RequestReply`.
        kind: crate::Kind,
        /// Stream: the ring's bytes; broadcast: the slots; request/reply: the client slots.
        capacity: u32,
        /// The largest message in bytes (request/reply: the largest request).
        max_message: u32,
        /// Stream: messages sent and not yet given back by the consumer (see
        /// [`Stream::queued`](crate::Stream::queued)).
        queued: Option<u64>,
        /// Whether a producer (publisher, writer, server) is connected.
        producer: bool,
        /// How many consumers, subscribers or clients are connected.
        peers: u32,
    },
}
