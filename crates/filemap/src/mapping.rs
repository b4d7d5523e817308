//! File mappings: named shared memory and mapped files.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::sys::{self, CreateOptions, Disposition};
use crate::{Error, Name, Namespace, Result, View};

/// Access to a mapping or a view, like Windows' `FILE_MAP_READ`, `FILE_MAP_WRITE` and
/// `FILE_MAP_COPY` (and the page protections `PAGE_READONLY`, `PAGE_READWRITE`,
/// `PAGE_WRITECOPY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read only. Views of a read-only mapping can be read-only or copy-on-write.
    Read,
    /// Read and write, shared with every other holder.
    ReadWrite,
    /// Reads see the shared bytes; writes go to private copies of the touched pages and are
    /// never seen by anyone else (`MAP_PRIVATE`, `FILE_MAP_COPY`).
    CopyOnWrite,
}

impl Access {
    /// Whether a view with `view` access can be made from a mapping opened with `self`.
    pub fn allows(self, view: Access) -> bool {
        match view {
            Access::Read | Access::CopyOnWrite => true,
            Access::ReadWrite => self == Access::ReadWrite,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read-only",
            Access::ReadWrite => "read-write",
            Access::CopyOnWrite => "copy-on-write",
        })
    }
}

/// Options for creating and opening mappings: the namespace, the permissions of new
/// objects and persistence. Modes, namespace roots and persistence are Linux's; on
/// Windows, modes and roots are ignored and persistence is `Unsupported`.
///
/// ```
/// # fn main() -> filemap::Result<()> {
/// # if cfg!(target_os = "linux") {
/// # let dir = std::env::temp_dir().join(format!("filemap-doc-opts-{}", std::process::id()));
/// use filemap::{Options, Namespace};
///
/// // A Global\ mapping that other users may read, and that outlives this process.
/// let m = Options::new()
///     .namespace(Namespace::at(&dir))
///     .mode(0o644)
///     .persistent(true)
///     .create("Global\\telemetry", 4096)?;
/// drop(m);
/// Namespace::at(&dir).remove("Global\\telemetry")?; // persistent: removed by hand
/// # std::fs::remove_dir_all(&dir).ok();
/// # }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    namespace: Namespace,
    mode: u32,
    persistent: bool,
    sparse: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: Namespace::new(),
            mode: 0o600,
            persistent: false,
            sparse: false,
        }
    }
}

impl Options {
    /// Default options: the default namespace, owner-only (0600), not persistent.
    #[must_use]
    pub fn new() -> Options {
        Options::default()
    }

    /// The namespace to use.
    pub fn namespace(&mut self, namespace: Namespace) -> &mut Self {
        self.namespace = namespace;
        self
    }

    /// The permission bits of new objects (Linux). The default, 0600, is owner-only.
    /// `0o640`/`0o644` let the group/others open a `Global\` object read-only, and
    /// `0o660`/`0o666` read-write. Only read and write bits are allowed, and the owner keeps
    /// both. (A `Local\` namespace directory is owner-only, so these bits matter for
    /// `Global\` objects.)
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Whether a new object outlives its holders. A persistent object is removed only by
    /// [`Namespace::remove`] (`filemap rm`). Linux only: on Windows, creating a persistent
    /// object gives [`crate::Error::Unsupported`], since the kernel destroys an object with
    /// its last handle.
    pub fn persistent(&mut self, persistent: bool) -> &mut Self {
        self.persistent = persistent;
        self
    }

    /// Whether a new mapping's storage is left unreserved (default: reserved). Reserving it
    /// (`posix_fallocate`) takes time in proportion to the size (about 0.4 s for 1 GiB on
    /// the machines of docs/BENCHMARKS.md) and charges all the memory at once, and in
    /// exchange a full `/dev/shm` is a [`crate::Error::NoSpace`] at create. A sparse mapping is created at once, and its
    /// pages come at their first touch, which suits a large mapping that is used sparsely.
    ///
    /// **The risk:** if `/dev/shm` (or the file's file system) is full when a page is first
    /// touched, that access raises SIGBUS, which kills the process unless it handles the
    /// signal. Only the creator's option counts: opening an existing mapping ignores it, and
    /// synchronization objects are always reserved. It applies to a file grown by
    /// [`Options::map_path`] or [`Options::map_file`] too. On Windows, which commits a
    /// section's pages as they are touched anyway, it changes nothing.
    ///
    /// ```
    /// # fn main() -> filemap::Result<()> {
    /// # let root = std::env::temp_dir().join(format!("filemap-doc-sparse-{}", std::process::id()));
    /// let mut opts = filemap::Options::new();
    /// # opts.namespace(filemap::Namespace::at(&root));
    /// opts.sparse(true);
    /// let big = opts.create("Local\\frames", 1 << 30)?; // 1 GiB, no memory used yet
    /// big.map_view(filemap::Access::ReadWrite, 512 << 20, 4096)?
    ///     .write_at(0, b"one page")?;
    /// # drop(big);
    /// # let _ = std::fs::remove_dir_all(&root);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sparse(&mut self, sparse: bool) -> &mut Self {
        self.sparse = sparse;
        self
    }

    pub(crate) fn namespace_ref(&self) -> &Namespace {
        &self.namespace
    }

    pub(crate) fn create_options(&self) -> Result<CreateOptions> {
        if self.mode & !0o666 != 0 {
            return Err(Error::InvalidArgument {
                what: format!(
                    "mode {:o}: only read and write bits (666) are allowed",
                    self.mode
                ),
            });
        }
        if self.mode & 0o600 != 0o600 {
            return Err(Error::InvalidArgument {
                what: format!(
                    "mode {:o}: the owner must keep read and write access (600)",
                    self.mode
                ),
            });
        }
        Ok(CreateOptions {
            mode: self.mode,
            persistent: self.persistent,
            sparse: self.sparse,
        })
    }

    fn new_shm(&self, name: &str, size: u64, disposition: Disposition) -> Result<FileMapping> {
        let name = Name::parse(name)?;
        if size == 0 {
            return Err(Error::InvalidSize {
                what: "a mapping's size must be greater than 0".into(),
            });
        }
        // Checked here, so that both platforms give the same error: past it, Linux's file
        // offsets overflow, and Windows says "invalid parameter".
        if size > FileMapping::MAX_SIZE {
            return Err(Error::InvalidSize {
                what: format!(
                    "{size} bytes is too large (the limit is {} bytes)",
                    FileMapping::MAX_SIZE
                ),
            });
        }
        let opts = self.create_options()?;
        let inner = sys::Mapping::create(&self.namespace, &name, size, opts, disposition)?;
        Ok(FileMapping {
            inner: Arc::new(inner),
        })
    }

    /// Creates a new mapping of `size` bytes, zero-filled, with its storage reserved now.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] if a live mapping has the name; [`Error::KindMismatch`] if
    /// another kind has it; [`Error::InvalidSize`] for 0; [`Error::NoSpace`] if the storage
    /// cannot be reserved; [`Error::InvalidName`], [`Error::InvalidArgument`] (mode).
    #[doc(alias = "CreateFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create(&self, name: &str, size: u64) -> Result<FileMapping> {
        self.new_shm(name, size, Disposition::CreateNew)
    }

    /// Opens the mapping if it exists, or creates it: `CreateFileMapping`'s real meaning.
    /// [`FileMapping::already_existed`] tells which happened. If it existed, its size wins.
    /// The mapping is read-write either way.
    ///
    /// When several processes race, exactly one creates the object and all the others open
    /// that same object.
    ///
    /// # Errors
    ///
    /// As [`Options::create`], except that an existing mapping is not an error.
    #[doc(alias = "CreateFileMappingW")]
    #[doc(alias = "CreateFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create(&self, name: &str, size: u64) -> Result<FileMapping> {
        self.new_shm(name, size, Disposition::OpenOrCreate)
    }

    /// Opens an existing mapping with `access` (`OpenFileMapping`).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no live mapping has the name; [`Error::KindMismatch`];
    /// [`Error::PermissionDenied`] if its permissions do not allow `access`.
    #[doc(alias = "OpenFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open(&self, name: &str, access: Access) -> Result<FileMapping> {
        let name = Name::parse(name)?;
        let inner = sys::Mapping::open(&self.namespace, &name, access)?;
        Ok(FileMapping {
            inner: Arc::new(inner),
        })
    }

    /// Maps the file at `path`, optionally under a name that other processes can open.
    ///
    /// `size` 0 means the file's current size; a larger size grows the file (which needs
    /// [`Access::ReadWrite`]). With a name, the call has open-or-create semantics like
    /// `CreateFileMapping(hFile, ..., name)`: if a live mapping already has the name, that
    /// mapping is returned and the file is not used. The mapping object lives as long as
    /// its holders; the file itself stays.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] if the file cannot be opened with `access`;
    /// [`Error::InvalidSize`] for an empty file with size 0; naming errors as for
    /// [`Options::create`].
    #[doc(alias = "CreateFileMapping")]
    #[doc(alias = "CreateFileMappingW")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn map_path(
        &self,
        path: impl AsRef<Path>,
        size: u64,
        access: Access,
        name: Option<&str>,
    ) -> Result<FileMapping> {
        let path = path.as_ref();
        let name = name.map(Name::parse).transpose()?;
        let opts = self.create_options()?;
        let file = sys::open_for_mapping(path, access)?;
        let named = name.as_ref().map(|n| (&self.namespace, n));
        let inner = sys::Mapping::from_file(file, Some(path), size, access, opts, named)?;
        Ok(FileMapping {
            inner: Arc::new(inner),
        })
    }

    /// Like [`Options::map_path`], for a file that is already open. Its open mode
    /// bounds the access: a read-only `File` cannot give a read-write mapping.
    ///
    /// # Errors
    ///
    /// As for [`Options::map_path`]; [`Error::PermissionDenied`] if `access` asks for more
    /// than the file's open mode allows.
    #[doc(alias = "CreateFileMapping")]
    #[doc(alias = "CreateFileMappingW")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn map_file(
        &self,
        file: &File,
        size: u64,
        access: Access,
        name: Option<&str>,
    ) -> Result<FileMapping> {
        let name = name.map(Name::parse).transpose()?;
        let opts = self.create_options()?;
        let fd = sys::dup_file(file)?;
        let named = name.as_ref().map(|n| (&self.namespace, n));
        let inner = sys::Mapping::from_file(fd, None, size, access, opts, named)?;
        Ok(FileMapping {
            inner: Arc::new(inner),
        })
    }
}

/// A handle to a file mapping object: named shared memory, or a mapped file.
///
/// As on Windows, the *name* lives while any process holds a handle (a `FileMapping`), and
/// the *memory* while any process holds a handle or a [`View`]. Once the last handle is
/// dropped, the name is gone (`open` gives [`Error::NotFound`], `create` makes a new,
/// zeroed object) even while views are still mapped; those views keep working on the old
/// memory, which is freed with the last of them. Cloning the handle is cheap and shares it.
///
/// See [`Options`] for every way to make one; the associated functions here use the
/// default options.
#[derive(Debug, Clone)]
pub struct FileMapping {
    inner: Arc<sys::Mapping>,
}

impl FileMapping {
    /// The largest size a shared-memory mapping may be asked for: 2^63 − 2^20 bytes, what
    /// a file offset holds once filemap's record and a stored name are added. Larger sizes
    /// are [`Error::InvalidSize`]; sizes up to it that the machine cannot hold are
    /// [`Error::NoSpace`], on both platforms.
    pub const MAX_SIZE: u64 = (1 << 63) - (1 << 20);

    /// [`Options::create`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::create`].
    #[doc(alias = "CreateFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn create(name: &str, size: u64) -> Result<FileMapping> {
        Options::new().create(name, size)
    }

    /// [`Options::open_or_create`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open_or_create`].
    #[doc(alias = "CreateFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open_or_create(name: &str, size: u64) -> Result<FileMapping> {
        Options::new().open_or_create(name, size)
    }

    /// [`Options::open`] with the default options.
    ///
    /// # Errors
    ///
    /// As for [`Options::open`].
    #[doc(alias = "OpenFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn open(name: &str, access: Access) -> Result<FileMapping> {
        Options::new().open(name, access)
    }

    /// An unnamed mapping of the file at `path` ([`Options::map_path`]).
    ///
    /// # Errors
    ///
    /// As for [`Options::map_path`].
    #[doc(alias = "CreateFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn from_path(path: impl AsRef<Path>, size: u64, access: Access) -> Result<FileMapping> {
        Options::new().map_path(path, size, access, None)
    }

    /// An unnamed mapping of an open file ([`Options::map_file`]).
    ///
    /// # Errors
    ///
    /// As for [`Options::map_file`].
    #[doc(alias = "CreateFileMapping")]
    #[must_use = "dropping the handle closes it (and the object goes with its last handle)"]
    pub fn from_file(file: &File, size: u64, access: Access) -> Result<FileMapping> {
        Options::new().map_file(file, size, access, None)
    }

    /// The exact size in bytes, as the creator asked for it (not rounded to pages).
    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    /// The access this handle was opened with; it bounds the views.
    pub fn access(&self) -> Access {
        self.inner.access()
    }

    /// The name, for a named mapping.
    pub fn name(&self) -> Option<&Name> {
        self.inner.name()
    }

    /// `true` if `open_or_create` (or a named file mapping) found the object already there,
    /// like Windows' `ERROR_ALREADY_EXISTS`; always `true` after `open`.
    pub fn already_existed(&self) -> bool {
        !self.inner.created()
    }

    /// The file that holds the mapping's bytes, from offset 0: the object file on tmpfs for
    /// shared memory, or the mapped file. Other languages can map it (see the README for the
    /// protocol that keeps them counted as holders).
    pub fn os_path(&self) -> Option<&Path> {
        self.inner.os_path()
    }

    /// A new open file description of the mapping's bytes (Linux), holding none of the
    /// handle's locks, readable (and writable for [`Access::ReadWrite`]): for mapping the
    /// memory with another runtime's `mmap` (Python's `mmap` module, say) without keeping
    /// the name alive, as a view would not.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] if `access` is more than the handle's;
    /// [`Error::Unsupported`] on Windows (map the name there: `mmap.mmap(-1, size,
    /// tagname=name)`); [`Error::Io`] without `/proc`.
    #[cfg(unix)]
    pub fn reopen(&self, access: Access) -> Result<std::fs::File> {
        if !self.access().allows(access) {
            return Err(Error::denied(format!(
                "a {access} descriptor of a mapping opened {}",
                self.access()
            )));
        }
        self.inner.reopen(access).map(std::fs::File::from)
    }

    /// A duplicate of the handle's own descriptor (Linux): the same open file description,
    /// with the handle's access, so mapping it with another runtime's `mmap` costs no second
    /// `open` (about 4 µs for [`reopen`](Self::reopen)'s trip through `/proc`).
    ///
    /// While the handle lives, the duplicate shares its locks (an OFD lock belongs to the
    /// description). When the handle is dropped, it gives them up explicitly, so the
    /// duplicate, and memory mapped through it, keeps the bytes but not the name, as a view
    /// does. The locks go for every process that shares the description, so a child forked
    /// without `exec` that holds a copy of this handle then no longer counts as a holder.
    /// Do not resize the file through it: other holders' views would lose their pages
    /// (SIGBUS), exactly as if the file were truncated by its path.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the descriptor table is full.
    #[cfg(unix)]
    pub fn dup_fd(&self) -> Result<std::os::fd::OwnedFd> {
        self.inner.dup_fd()
    }

    /// Maps a view of `len` bytes at `offset` (`MapViewOfFile`). `len` 0 means "to the end".
    ///
    /// Any offset is allowed: the page alignment that the OS needs is hidden. The view keeps
    /// the mapping alive after this handle is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if the range does not fit in the mapping;
    /// [`Error::PermissionDenied`] if `access` is more than the handle's (a read-write view
    /// of a read-only handle). Copy-on-write views are allowed on every handle.
    #[doc(alias = "MapViewOfFile")]
    #[must_use = "dropping the view unmaps it"]
    pub fn map_view(&self, access: Access, offset: u64, len: u64) -> Result<View> {
        let size = self.size();
        if !self.access().allows(access) {
            return Err(Error::denied(format!(
                "a {access} view of a mapping opened {}",
                self.access()
            )));
        }
        let len = if len == 0 {
            size.saturating_sub(offset)
        } else {
            len
        };
        if offset >= size || len == 0 || len > size - offset {
            return Err(Error::OutOfRange { offset, len, size });
        }
        let len_usize = usize::try_from(len).map_err(|_| Error::InvalidSize {
            what: format!("a view of {len} bytes does not fit in the address space"),
        })?;
        let region = self.inner.map(access, offset, len_usize)?;
        Ok(View::new(region, offset, access))
    }
}
