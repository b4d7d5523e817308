//! What every benchmark uses (the filemap-cli admin benchmark includes it by path):
//! medians over rounds, and clean-up that runs on panic too.

/// The median of the rounds (these machines are noisy).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
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
