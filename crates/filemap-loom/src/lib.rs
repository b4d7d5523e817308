//! Loom model checks of filemap's pure channel algorithms.
//!
//! The files are filemap's own (`#[path]`), compiled with `--cfg loom` against loom's
//! atomics and a loom memory (`channel/mem.rs` here) in place of shared memory: the
//! stream ring's bytes and the request/reply slots' requests and replies are loom cells,
//! so loom reports any read of a frame or request that is not ordered after its write (or
//! a write over one not yet read), and the slots' words are loom atomics. Loom then runs every interleaving of the threads in each test (up to
//! a preemption bound) and checks the assertions in all of them.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --manifest-path crates/filemap-loom/Cargo.toml`
//! (without `--cfg loom` this crate is empty).
#![cfg(loom)]
#![allow(dead_code, unused_imports, unsafe_code)]

/// What `crate::atomic` is in filemap.
mod atomic {
    pub(crate) use loom::hint::spin_loop;
    pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
}

// `#[path]` inside an inline module resolves through a directory of that name, so the
// files are included at the top and placed in filemap's module tree below.
#[path = "../../filemap/src/channel/algo.rs"]
mod channel_algo;
#[path = "../../filemap/src/channel/rpc.rs"]
mod channel_rpc;
#[path = "../../filemap/src/channel/seqlock.rs"]
mod channel_seqlock;
#[path = "../../filemap/src/sync/algo.rs"]
mod sync_algo;

mod sync {
    pub(crate) use super::sync_algo as algo;
}

mod channel {
    pub(crate) use super::channel_algo as algo;
    pub(crate) use super::channel_rpc as rpc;
    pub(crate) use super::channel_seqlock as seqlock;
    pub(crate) mod mem;
}

#[cfg(test)]
mod tests;
