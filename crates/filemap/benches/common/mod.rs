//! What every benchmark uses (the filemap-cli admin benchmark includes it by path):
//! medians over rounds, a namespace root on tmpfs, and clean-up that runs on panic too.

/// The median of the rounds (these machines are noisy).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The best time per call of `f` over `batches` batches of `n` calls, in nanoseconds (in
/// one thread, the best batch is the one least disturbed).
#[allow(dead_code)] // Not every benchmark that includes this module times batches.
pub fn best(batches: usize, n: usize, mut f: impl FnMut()) -> f64 {
    (0..batches)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Removes files and folders when dropped, also when a panic (a closed stdout, say)
/// unwinds.
pub struct RemoveOnDrop(pub Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// A namespace root of this process's own on `/dev/shm` (tmpfs), where filemap's objects
/// live by default. Not under `/tmp`: on a disk file system (ext4 here) shared pages carry
/// write-back costs that objects on tmpfs never pay (docs/BENCHMARKS.md).
#[allow(dead_code)] // Not every benchmark that includes this module makes a root.
pub fn shm_root(tag: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/dev/shm/filemap-bench-{tag}-{}",
        std::process::id()
    ))
}
