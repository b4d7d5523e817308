//! Administration at scale: `filemap ls`, `ls --json`, `info`, `gc` and
//! `Namespace::list` with 10, 1,000 and 10,000 live objects, against `ls -l` on the same
//! directory, measured side by side in one run.
//!
//! `cargo bench -p filemap-cli --bench admin` prints a Markdown table for
//! docs/BENCHMARKS.md. The objects are 4 KiB mappings that a second process (this
//! benchmark, re-run in a holder role) creates and holds open, so they are live and every
//! holder lookup has work to do. The measuring process holds none: spawning a command from
//! a process with 10,000 descriptors costs milliseconds by itself.
// A benchmark's report may panic on a closed stdout; the CLI's rule does not apply.
#![allow(clippy::disallowed_macros)]

// The filemap crate's benchmark helpers (median, clean-up on drop).
#[cfg(target_os = "linux")]
#[path = "../../filemap/benches/common/mod.rs"]
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
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use super::common::{median, RemoveOnDrop};
    use filemap::{FileMapping, Namespace, Options};

    /// Milliseconds that a command takes, output discarded; it must succeed.
    fn run_ms(cmd: &mut Command) -> f64 {
        let start = Instant::now();
        let status = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert!(status.success(), "{cmd:?} failed");
        ms
    }

    fn filemap(root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_filemap"));
        c.arg("--root").arg(root).args(args);
        c
    }

    /// The holder role: create `n` objects under `root`, say "ready", hold them until the
    /// end of standard input.
    fn hold(root: &Path, n: usize) {
        // 10,000 handles are 10,000 descriptors.
        if let Some(lim) = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum {
            let _ = rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(lim),
                    maximum: Some(lim),
                },
            );
        }
        let mut opts = Options::new();
        opts.namespace(Namespace::at(root));
        let held: Vec<FileMapping> = (0..n)
            .map(|i| opts.create(&format!("Local\\object-{i:05}"), 4096).unwrap())
            .collect();
        println!("ready");
        std::io::stdout().flush().unwrap();
        let mut rest = String::new();
        let _ = std::io::stdin().read_line(&mut rest);
        drop(held);
    }

    pub(super) fn main() {
        if let Ok(role) = std::env::var("FILEMAP_BENCH_HOLD") {
            let (root, n) = role.split_once(',').unwrap();
            hold(Path::new(root), n.parse().unwrap());
            return;
        }
        let rounds = 7;
        println!("### Administration with N live objects ({rounds} runs each, median, ms)\n");
        println!("| N | `ls -l` | `filemap ls` | ratio | `ls --json` | ratio | `info` one | `gc` | `Namespace::list` |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut info_at_10 = None;
        for n in [10usize, 1000, 10_000] {
            let root = PathBuf::from(format!(
                "/dev/shm/filemap-bench-admin-{}-{n}",
                std::process::id()
            ));
            let _cleanup = RemoveOnDrop(vec![root.clone()]);
            let mut holder = Command::new(std::env::current_exe().unwrap())
                .env("FILEMAP_BENCH_HOLD", format!("{},{n}", root.display()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(holder.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line, "ready\n");
            let ns = Namespace::at(&root);
            let dir = ns.info("Local\\object-00000").unwrap().os_path.unwrap();
            let dir = dir.parent().unwrap().to_owned();
            assert_eq!(ns.list().unwrap().len(), n);
            let (mut ls, mut fls, mut json, mut info, mut gc, mut lib) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for _ in 0..rounds {
                ls.push(run_ms(Command::new("ls").arg("-l").arg(&dir)));
                fls.push(run_ms(&mut filemap(&root, &["ls"])));
                json.push(run_ms(&mut filemap(&root, &["ls", "--json"])));
                info.push(run_ms(&mut filemap(
                    &root,
                    &["info", "Local\\object-00005"],
                )));
                gc.push(run_ms(&mut filemap(&root, &["gc"])));
                let start = Instant::now();
                let listed = ns.list().unwrap();
                lib.push(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(listed.len(), n);
            }
            let (ls, fls, json, info, gc, lib) = (
                median(ls),
                median(fls),
                median(json),
                median(info),
                median(gc),
                median(lib),
            );
            let info_ratio = match info_at_10 {
                None => {
                    info_at_10 = Some(info);
                    String::new()
                }
                Some(base) => format!(" ({:.2}x N=10)", info / base),
            };
            println!(
                "| {n} | {ls:.1} | {fls:.1} | {:.2}x | {json:.1} | {:.2}x | {info:.1}{info_ratio} | {gc:.1} | {lib:.1} |",
                fls / ls,
                json / ls
            );
            drop(holder.stdin.take());
            assert!(holder.wait().unwrap().success());
        }
        println!();
    }
}
