//! Owner death for filemap's mutexes on Linux: the process-private half of the design in
//! `docs/mutex.md`.
//!
//! - **Process death.** Every process that uses mutexes runs one or more *sentinel*
//!   threads. A sentinel registers a robust list of its own with the kernel
//!   (`set_robust_list`) and then sleeps until the process ends. Its thread id is the
//!   process's *id word* in the mutexes' lock words. When the process dies (SIGKILL
//!   included) or execs, the kernel walks the sentinel's list and, for every word that
//!   holds the sentinel's id, sets `FUTEX_OWNER_DIED` and wakes a sleeper.
//! - **The list lives in private memory.** Each mutex's state page is mapped right after a
//!   private *shadow* page (`ShadowedState`), and the list's entries are in the shadow, one
//!   page before the words they name. The kernel's `futex_offset` is one page. No pointer is
//!   ever stored in memory that another process can see or write.
//! - Entries stay linked for as long as the process has the mutex mapped, whether anybody
//!   owns it or not: the kernel only marks words that hold the dying id, so locking and
//!   unlocking never touch the list.
//! - **Thread exit.** Which thread owns a mutex is private bookkeeping ([`Core`]). A thread
//!   that owned any mutex runs a thread-local destructor when it exits, which marks each
//!   one it still owns as abandoned and wakes the waiters.
//! - **Ownership outlives the handle**, as on Windows: the last handle of a mutex that a
//!   thread owns leaves its core (and mapping) in the registry's orphans until that thread
//!   exits or gives it up.
//!
//! glibc keeps its own robust list per thread for pthread mutexes; a sentinel is a thread
//! of ours that never uses one, so replacing its registration takes nothing from glibc.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Weak};

use rustix::fd::OwnedFd;

// A sentinel does not survive a fork, so a child starts a new registry, one per fork
// generation, and cores from before the fork are refused there.
use super::fork::{generation, PerGeneration};
use super::futex::Futex;
use super::memory::ShadowedState;
use crate::sync::algo::{MutexState, SLOTS};
use crate::{Error, Result};

/// One entry of a robust list (the kernel's `struct robust_list`).
#[repr(C)]
struct Node {
    next: AtomicPtr<Node>,
}

/// The head of a robust list (the kernel's `struct robust_list_head`).
#[repr(C)]
struct Head {
    list: Node,
    futex_offset: AtomicIsize,
    list_op_pending: AtomicPtr<Node>,
}

/// The kernel stops walking a robust list after this many entries (`ROBUST_LIST_LIMIT`).
const KERNEL_LIST_LIMIT: usize = 2048;
/// Entries per mutex: its lock word, every watch word, and this process's claim.
const NODES_PER_CORE: usize = SLOTS + 2;
/// Mutexes per sentinel, so that its list stays within the kernel's limit.
const CORES_PER_SENTINEL: usize = KERNEL_LIST_LIMIT / NODES_PER_CORE;

/// A thread whose robust list the kernel walks when the process ends.
#[derive(Debug)]
struct Sentinel {
    /// Its thread id: the process's id word for the mutexes on its list.
    id: u32,
    head: &'static Head,
    /// Cores on its list.
    cores: usize,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head").finish_non_exhaustive()
    }
}

impl Sentinel {
    fn spawn() -> Result<Sentinel> {
        let page = rustix::param::page_size();
        let head: &'static Head = Box::leak(Box::new(Head {
            list: Node {
                next: AtomicPtr::new(std::ptr::null_mut()),
            },
            futex_offset: AtomicIsize::new(page as isize),
            list_op_pending: AtomicPtr::new(std::ptr::null_mut()),
        }));
        // An empty list points at itself.
        head.list
            .next
            .store(&head.list as *const Node as *mut Node, SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        let failed = |e: std::io::Error| Error::Io {
            context: "starting the thread that reports this process's death to mutexes".into(),
            source: e,
        };
        // The sentinel must never take a signal meant for the process: SIGTERM, say, would
        // end the process there, past the program's own handler or `sigwait`. It inherits
        // a mask with every signal blocked; ours is restored right after.
        // SAFETY: zeroed sigset_t values are valid buffers, filled by sigfillset and
        // pthread_sigmask before use.
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            old
        };
        let spawned = std::thread::Builder::new()
            .name("filemap-robust".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // SAFETY: `head` is a valid, 'static robust_list_head; the kernel reads it
                // (and the entries it points to) only when this thread exits.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_set_robust_list,
                        head as *const Head,
                        std::mem::size_of::<Head>(),
                    )
                };
                let result = if rc == 0 {
                    Ok(rustix::thread::gettid().as_raw_pid() as u32)
                } else {
                    Err(std::io::Error::last_os_error())
                };
                let registered = result.is_ok();
                let _ = tx.send(result);
                if registered {
                    // Sleep until the process ends; the kernel then walks the list.
                    loop {
                        std::thread::park();
                    }
                }
            });
        // SAFETY: `old` is the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        spawned.map_err(failed)?;
        let id = rx
            .recv()
            .map_err(|_| failed(std::io::Error::other("it stopped")))?
            .map_err(failed)?;
        Ok(Sentinel { id, head, cores: 0 })
    }
}

/// How a fast path ended (see [`Core::lock_fast`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fast {
    Done,
    Unlock,
    Slow,
}

/// This process's view of one mutex object, shared by all its handles to it.
#[derive(Debug)]
pub(crate) struct Core {
    map: ShadowedState,
    /// The process's id word for this mutex (its sentinel's thread id).
    id: u32,
    /// Index of the sentinel whose list holds our entries.
    sentinel: usize,
    /// Our claimed slot (see `sync::algo`), if one was free.
    slot: Option<usize>,
    gen: u32,
    key: (u64, u64),
    /// The token of the thread that owns the mutex, 0 if no thread of ours does.
    owner: AtomicU64,
    /// Its recursion depth; touched only by the owning thread.
    depth: AtomicU32,
}

impl Core {
    #[inline]
    pub(crate) fn state(&self) -> &MutexState {
        // SAFETY: the state page is mapped while `self` lives, page-aligned, larger than
        // MutexState, and every bit pattern of MutexState's atomics is valid.
        unsafe { &*self.map.state().cast::<MutexState>() }
    }

    #[inline]
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    #[inline]
    pub(crate) fn slot(&self) -> Option<usize> {
        self.slot
    }

    /// Whether the calling thread owns the mutex.
    #[inline]
    pub(crate) fn owned_by(&self, me: &Me<'_>) -> bool {
        self.owner.load(Relaxed) == me.token()
    }

    /// `false` for a core that was opened before a `fork` in this (child) process: its id
    /// word is the parent's, so the child must not use it.
    #[inline]
    pub(crate) fn check_fork(&self) -> bool {
        self.gen == generation()
    }

    /// The uncontended lock: one more level for the owning thread, or a free mutex taken
    /// with one compare-and-swap. `Fast::Slow` (changing nothing) for everything else,
    /// which [`with_thread`] and the full path handle.
    #[inline]
    pub(crate) fn lock_fast(&self) -> Fast {
        THREAD
            .try_with(|t| {
                if t.gen.get() != self.gen || self.gen != generation() {
                    return Fast::Slow;
                }
                let token = t.token.get();
                if self.owner.load(Relaxed) == token {
                    let d = self.depth.load(Relaxed);
                    if d == u32::MAX {
                        return Fast::Slow;
                    }
                    self.depth.store(d + 1, Relaxed);
                    return Fast::Done;
                }
                let s = self.state();
                if s.lock
                    .word
                    .compare_exchange(0, self.id, Acquire, Relaxed)
                    .is_err()
                {
                    return Fast::Slow;
                }
                self.owner.store(token, Relaxed);
                self.depth.store(1, Relaxed);
                s.lock.extra.store(t.pid.get(), Relaxed);
                t.owned.set(t.owned.get() + 1);
                Fast::Done
            })
            .unwrap_or(Fast::Slow)
    }

    /// The common release: one level less, or the last level given up with one
    /// compare-and-swap. `Fast::Unlock`: the bookkeeping is done but the lock word needs
    /// the full unlock (sleepers to wake, or a foreign word). `Fast::Slow`: nothing changed
    /// (not the owner, a new thread, a fork child).
    #[inline]
    pub(crate) fn release_fast(&self) -> Fast {
        THREAD
            .try_with(|t| {
                if t.gen.get() != self.gen
                    || self.gen != generation()
                    || self.owner.load(Relaxed) != t.token.get()
                {
                    return Fast::Slow;
                }
                let d = self.depth.load(Relaxed);
                if d > 1 {
                    self.depth.store(d - 1, Relaxed);
                    return Fast::Done;
                }
                // Private bookkeeping first: once the word is free, another of our threads
                // may take it and write its own.
                self.depth.store(0, Relaxed);
                self.owner.store(0, Relaxed);
                t.owned.set(t.owned.get().saturating_sub(1));
                let s = self.state();
                s.lock.extra.store(0, Relaxed);
                match s.lock.word.compare_exchange(self.id, 0, Release, Relaxed) {
                    Ok(_) => Fast::Done,
                    Err(_) => Fast::Unlock,
                }
            })
            .unwrap_or(Fast::Slow)
    }

    /// One more level for the owning thread. `false` at the limit.
    #[inline]
    pub(crate) fn enter(&self) -> bool {
        let d = self.depth.load(Relaxed);
        if d == u32::MAX {
            return false;
        }
        self.depth.store(d + 1, Relaxed);
        true
    }

    /// Records the calling thread as the owner, after it took the lock word.
    #[inline]
    pub(crate) fn took(&self, me: &Me<'_>) {
        self.owner.store(me.token(), Relaxed);
        self.depth.store(1, Relaxed);
        self.state().lock.extra.store(me.pid(), Relaxed);
        me.0.owned.set(me.0.owned.get() + 1);
    }

    /// One level less for the owning thread; `true` when that was the last, and the
    /// caller must unlock the word.
    #[inline]
    pub(crate) fn leave(&self, me: &Me<'_>) -> bool {
        let d = self.depth.load(Relaxed);
        if d > 1 {
            self.depth.store(d - 1, Relaxed);
            return false;
        }
        self.depth.store(0, Relaxed);
        self.owner.store(0, Relaxed);
        self.state().lock.extra.store(0, Relaxed);
        me.0.owned.set(me.0.owned.get().saturating_sub(1));
        true
    }

    /// The robust words, in the order the kernel must mark them: the lock word before the
    /// watch words (see `MutexWait::prepare_sleep`), then our claim.
    fn robust_words(&self) -> impl Iterator<Item = &AtomicU32> {
        let s = self.state();
        std::iter::once(&s.lock.word)
            .chain(s.watches.iter().map(|c| &c.word))
            .chain(self.slot.map(|j| &s.claims[j].word))
    }

    /// The list entry that names `word`: at the same offset in the shadow page.
    fn node_for(&self, word: &AtomicU32) -> *mut Node {
        let offset = word as *const AtomicU32 as usize - self.map.state() as usize;
        debug_assert!(offset < self.map.page() && offset % 8 == 0);
        // SAFETY: `offset` is inside the state page, so the result is inside the shadow
        // page, which is as long.
        unsafe { self.map.shadow().add(offset).cast::<Node>() }
    }

    /// Links our entries at the front of `head`'s list, lock word first.
    fn link(&self, head: &Head) {
        let nodes: Vec<*mut Node> = self.robust_words().map(|w| self.node_for(w)).collect();
        let first = head.list.next.load(SeqCst);
        for (i, &node) in nodes.iter().enumerate() {
            let next = nodes.get(i + 1).copied().unwrap_or(first);
            // SAFETY: `node` is 8-aligned in our live, private shadow page (`node_for`).
            unsafe { (*node).next.store(next, SeqCst) };
        }
        // One store publishes the whole chain, so the kernel sees it all or none of it.
        head.list.next.store(nodes[0], SeqCst);
    }

    /// Takes our entries out of `head`'s list; they are consecutive.
    fn unlink(&self, head: &Head) {
        let first = self.node_for(&self.state().lock.word);
        let last = self
            .robust_words()
            .last()
            .map(|w| self.node_for(w))
            .unwrap_or(first);
        let end = &head.list as *const Node as *mut Node;
        let mut prev = end;
        for _ in 0..=KERNEL_LIST_LIMIT {
            // SAFETY: `prev` is the head or an entry of a live core on this list (cores
            // unlink before they unmap, under the registry lock that we hold).
            let cur = unsafe { (*prev).next.load(SeqCst) };
            if cur == end {
                return;
            }
            if cur == first {
                // SAFETY: `last` is our own entry, and `prev` as above.
                unsafe { (*prev).next.store((*last).next.load(SeqCst), SeqCst) };
                return;
            }
            prev = cur;
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.gen != generation() {
            // A copy from before a fork: the list is the parent's, and its lock may have
            // been held by a thread that the child does not have. Just unmap.
            return;
        }
        let reg = registry();
        let mut inner = reg.lock();
        let sentinel = &mut inner.sentinels[self.sentinel];
        self.unlink(sentinel.head);
        sentinel.cores -= 1;
        if let Some(slot) = self.slot {
            self.state().release_slot(slot, self.id);
        }
        let me = self as *const Core;
        if inner
            .cores
            .get(&self.key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), me))
        {
            inner.cores.remove(&self.key);
        }
    }
}

/// The process's mutex cores and sentinels (one registry per fork generation).
#[derive(Debug, Default)]
struct Registry {
    inner: std::sync::Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every mapped core by (device, inode) of its object file.
    cores: HashMap<(u64, u64), Weak<Core>>,
    /// Cores that a thread owns but that no handle refers to any more.
    orphans: Vec<Arc<Core>>,
    sentinels: Vec<Sentinel>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it leaves the maps consistent (every change is one step).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// This generation's registry, made on first use (registries are never freed: one per
/// process, plus one per forked child that uses mutexes).
fn registry() -> &'static Registry {
    static REGISTRY: PerGeneration<Registry> = PerGeneration::new();
    REGISTRY.get()
}

/// Maps the state of the mutex object open as `fd` (whose file is `key`), or returns this
/// process's existing core for it.
pub(crate) fn attach(fd: &OwnedFd, key: (u64, u64)) -> Result<Arc<Core>> {
    let reg = registry();
    let mut inner = reg.lock();
    let dead = collect_orphans(&mut inner);
    if let Some(core) = inner.cores.get(&key).and_then(Weak::upgrade) {
        drop(inner);
        drop(dead);
        return Ok(core);
    }
    let map = ShadowedState::map(fd)?;
    let sentinel = match inner
        .sentinels
        .iter()
        .position(|s| s.cores < CORES_PER_SENTINEL)
    {
        Some(i) => i,
        None => {
            inner.sentinels.push(Sentinel::spawn()?);
            inner.sentinels.len() - 1
        }
    };
    let id = inner.sentinels[sentinel].id;
    let mut core = Core {
        map,
        id,
        sentinel,
        slot: None,
        gen: generation(),
        key,
        owner: AtomicU64::new(0),
        depth: AtomicU32::new(0),
    };
    core.slot = core.state().claim_slot(id);
    core.link(inner.sentinels[sentinel].head);
    inner.sentinels[sentinel].cores += 1;
    let core = Arc::new(core);
    inner.cores.insert(key, Arc::downgrade(&core));
    drop(inner);
    drop(dead);
    Ok(core)
}

/// Called as the last handle of `core` in this process closes: if a thread still owns the
/// mutex, the core stays (ownership outlives the handle).
pub(crate) fn closing(core: Arc<Core>) {
    if core.owner.load(Relaxed) == 0 || core.gen != generation() {
        return;
    }
    let mut inner = registry().lock();
    if Arc::strong_count(&core) == 1 {
        inner.orphans.push(core);
    }
}

/// Orphans that nobody owns any more, to be dropped once the registry is unlocked.
fn collect_orphans(inner: &mut Inner) -> Vec<Arc<Core>> {
    let (dead, kept) = std::mem::take(&mut inner.orphans)
        .into_iter()
        .partition(|c| c.owner.load(Relaxed) == 0);
    inner.orphans = kept;
    dead
}

/// What a thread leaves behind when it exits: every mutex it owns is abandoned.
fn abandon_all(token: u64) {
    let reg = registry();
    let mut inner = reg.lock();
    // Every core, kept until the lock is released: dropping the last reference to one
    // takes the registry lock again.
    let all: Vec<Arc<Core>> = inner
        .cores
        .values()
        .filter_map(Weak::upgrade)
        .chain(inner.orphans.iter().cloned())
        .collect();
    for core in all.iter().filter(|c| c.owner.load(Relaxed) == token) {
        core.state().abandon(core.id, &Futex);
        core.depth.store(0, Relaxed);
        core.owner.store(0, Relaxed);
    }
    let dead = collect_orphans(&mut inner);
    drop(inner);
    drop(dead);
    drop(all);
}

/// The calling thread's identity and bookkeeping.
#[derive(Debug)]
struct ThreadState {
    /// Unique in the process for its whole life (0: not yet given).
    token: Cell<u64>,
    /// The fork generation `pid` and `owned` belong to.
    gen: Cell<u32>,
    pid: Cell<u32>,
    /// How many mutexes this thread owns (at depth 1 or more).
    owned: Cell<u32>,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if self.owned.get() > 0 && self.gen.get() == generation() {
            abandon_all(self.token.get());
        }
    }
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            token: Cell::new(0),
            gen: Cell::new(u32::MAX),
            pid: Cell::new(0),
            owned: Cell::new(0),
        }
    };
}

static TOKENS: AtomicU64 = AtomicU64::new(1);

/// The calling thread, as [`with_thread`] gives it.
#[derive(Debug)]
pub(crate) struct Me<'a>(&'a ThreadState);

impl Me<'_> {
    #[inline]
    pub(crate) fn token(&self) -> u64 {
        self.0.token.get()
    }

    #[inline]
    fn pid(&self) -> u32 {
        self.0.pid.get()
    }
}

/// Runs `f` with the calling thread's identity.
#[inline]
pub(crate) fn with_thread<R>(f: impl FnOnce(&Me<'_>) -> Result<R>) -> Result<R> {
    THREAD
        .try_with(|t| {
            if t.gen.get() != generation() {
                refresh(t);
            }
            f(&Me(t))
        })
        .unwrap_or_else(|_| {
            Err(Error::Unsupported {
                what: "using a mutex from a thread-local destructor after this thread's own state is gone",
            })
        })
}

#[cold]
fn refresh(t: &ThreadState) {
    if t.token.get() == 0 {
        t.token.set(TOKENS.fetch_add(1, Relaxed));
    }
    // A new thread, or this thread in a new child: it owns nothing there.
    t.gen.set(generation());
    t.pid.set(rustix::process::getpid().as_raw_pid() as u32);
    t.owned.set(0);
}
