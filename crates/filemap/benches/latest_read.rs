//! The cost of one latest-value read (`LatestReader::read`, which broadcast subscribers
//! share: one seqlock read of a slot), against a plain `memcpy` of the same bytes into a
//! vector, in one thread with the value in cache; and of a typed read
//! (`LatestReader::read_value` of that many `u64` words, every word used).
//!
//! `cargo bench -p filemap --bench latest_read` prints a Markdown table for
//! docs/BENCHMARKS.md: per value size, the median of 31 rounds, each the best of 20
//! batches of reads, nanoseconds per read.
// A benchmark's report may panic on a closed stdout.
#![allow(clippy::disallowed_macros)]

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the benchmarks need the Linux backend");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::hint::black_box;

    use super::common::{self, median, RemoveOnDrop};

    const ROUNDS: usize = 31;
    const BATCHES: usize = 20;

    /// The best time per call of `f` over the batches, in nanoseconds.
    fn best(n: usize, f: impl FnMut()) -> f64 {
        common::best(BATCHES, n, f)
    }

    /// A typed read of a `T` of words, every word used (with one used, the compiler may
    /// copy only that one).
    #[inline(never)]
    fn read_words<T: filemap::Plain>(r: &mut filemap::LatestReader) -> u64 {
        let (v, _) = r.read_value::<T>().unwrap().unwrap();
        bytemuck::cast_slice::<u8, u64>(bytemuck::bytes_of(&v))
            .iter()
            .fold(0, |a, w| a ^ w)
    }

    pub fn main() {
        let dir = common::shm_root("latest-read");
        let _clean = RemoveOnDrop(vec![dir.clone()]);
        let mut opts = filemap::Options::new();
        opts.namespace(filemap::Namespace::at(&dir));
        println!("| size | memcpy ns | filemap read ns | / memcpy | typed read ns | / memcpy |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for size in [64usize, 4096, 65536] {
            let latest = opts.create_latest("latest", size as u32).unwrap();
            let mut w = latest.writer().unwrap();
            let mut r = latest.reader().unwrap();
            let value: Vec<u8> = (0..size).map(|i| i as u8).collect();
            w.publish(&value).unwrap();
            let n = (1 << 22) / size.max(256);
            let (mut raw, mut ours, mut typed) = (Vec::new(), Vec::new(), Vec::new());
            let mut buf = Vec::with_capacity(size);
            for _ in 0..ROUNDS {
                raw.push(best(n, || {
                    // What a reader of a private copy pays: the bytes into a vector.
                    buf.clear();
                    buf.extend_from_slice(black_box(&value[..]));
                    black_box(&buf);
                }));
                ours.push(best(n, || {
                    black_box(r.read(&mut buf).unwrap());
                }));
                typed.push(best(n, || {
                    black_box(match size {
                        64 => read_words::<[u64; 8]>(&mut r),
                        4096 => read_words::<[u64; 512]>(&mut r),
                        _ => read_words::<[[u64; 512]; 16]>(&mut r),
                    });
                }));
            }
            assert_eq!(buf, value);
            let (raw, ours, typed) = (median(raw), median(ours), median(typed));
            println!(
                "| {size} | {raw:.1} | {ours:.1} | {:.2}x | {typed:.1} | {:.2}x |",
                ours / raw,
                typed / raw
            );
            drop((w, r, latest));
        }
    }
}
