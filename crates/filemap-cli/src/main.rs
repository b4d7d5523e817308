//! `filemap`: named shared memory from the shell, and the CSFileMappingServer sample.
#![deny(unsafe_code)]
// Printing must not panic when stdout is a closed pipe (`filemap ls | head -1`).
#![deny(clippy::disallowed_macros)]

/// `println!` that ignores write errors: a closed stdout must not stop the cleanup.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that ignores write errors, for the same reason.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod admin;
mod bench;
mod channel;
mod rpc;
mod sample;
mod sync;
mod wait;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Named file mappings (Windows' CreateFileMapping model) for Linux and Windows.
#[derive(Debug, Parser)]
#[command(
    name = "filemap",
    version,
    about,
    max_term_width = 100,
    arg_required_else_help = true
)]
struct Cli {
    /// Namespace root directory (default: $FILEMAP_ROOT, or /dev/shm/filemap). Linux only.
    #[arg(long, global = true, value_name = "PATH")]
    root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The sample's server: create a mapping, write a message, wait for ENTER.
    Server(sample::ServerArgs),
    /// The sample's client: open the mapping read-only, print the message, wait for ENTER.
    Client(sample::ClientArgs),
    /// Run the server and the client as two processes and show what they print.
    Demo(sample::DemoArgs),
    /// Create an object and hold it until ENTER, end of input, SIGINT/SIGTERM or Ctrl-C, unless --persistent.
    Create(admin::CreateArgs),
    /// Write bytes into a mapping, from DATA, --input or standard input.
    Write(admin::WriteArgs),
    /// Read bytes from a mapping.
    Read(admin::ReadArgs),
    /// List the objects in your Local\ namespace and in Global\.
    Ls(admin::LsArgs),
    /// Show everything known about one object.
    Info(admin::InfoArgs),
    /// Remove a name (holders keep the object until they close it) (Linux).
    Rm(admin::RmArgs),
    /// Remove stale objects, whose holders all closed or died.
    Gc,
    /// Create the shared namespace directories (run once as root on multi-user machines) (Linux).
    Init,
    /// Set an event, or release a semaphore by one.
    Signal(sync::NameArg),
    /// Reset a (manual-reset) event.
    Reset(sync::NameArg),
    /// Wait for any of the named events, semaphores or mutexes; print the one that fired.
    Wait(sync::WaitArgs),
    /// Run a command while holding a named mutex, in the manner of flock(1); signals go to the command.
    Lock(sync::LockArgs),
    /// Send messages into a stream, broadcast or latest-value channel: the arguments, or standard input by line or chunk.
    Send(channel::SendArgs),
    /// Receive messages from a stream, broadcast or latest-value channel and write their bytes to standard output.
    Recv(channel::RecvArgs),
    /// Send requests on a request/reply channel and write each reply to standard output.
    Call(rpc::CallArgs),
    /// Serve a request/reply channel: run a command per request, its output the reply.
    Serve(rpc::ServeArgs),
    /// Measure channels against raw atomics, futexes, pipes and Unix sockets (Linux).
    Bench(bench::BenchArgs),
    /// A process of `filemap bench` (internal).
    #[command(hide = true)]
    BenchChild(bench::ChildArgs),
}

/// Text encodings for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Encoding {
    /// UTF-16LE, as .NET's Encoding.Unicode and Windows' wide strings.
    Utf16,
    /// UTF-8.
    Utf8,
}

impl Encoding {
    /// The text followed by a NUL terminator in this encoding.
    pub(crate) fn encode_nul(self, text: &str) -> Vec<u8> {
        let mut out = self.encode(text);
        out.extend_from_slice(match self {
            Encoding::Utf16 => &[0, 0],
            Encoding::Utf8 => &[0],
        });
        out
    }

    pub(crate) fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Encoding::Utf16 => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            Encoding::Utf8 => text.as_bytes().to_vec(),
        }
    }

    /// Decodes up to the first NUL (or the end), replacing invalid sequences.
    pub(crate) fn decode_nul(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Utf16 => {
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0)
                    .collect();
                String::from_utf16_lossy(&units)
            }
            Encoding::Utf8 => {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                String::from_utf8_lossy(&bytes[..end]).into_owned()
            }
        }
    }
}

/// Parses a byte count: decimal, `0x` hex, or with a K, M or G suffix (powers of 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|_| format!("{s:?} is not a byte count (examples: 65536, 0x10000, 64K)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses an octal file mode such as 600 or 0o644.
pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    u32::from_str_radix(t, 8)
        .map_err(|_| format!("{s:?} is not an octal mode (examples: 600, 644)"))
}

/// A failed command: the message to print, and the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl From<filemap::Error> for Failure {
    fn from(e: filemap::Error) -> Failure {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

pub(crate) type CmdResult = Result<(), Failure>;

/// The subcommand in `args` (program name first): the first word that is neither an
/// option nor the value of `--root`.
fn subcommand_of(args: &[OsString]) -> Option<&str> {
    let mut words = args.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(word) = words.next() {
        match word {
            "--root" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return Some(w),
        }
    }
    None
}

/// Clap's message in one line, with everything it says: the missing arguments, the
/// possible values, its tip and the usage. (Its closing "For more information, try
/// '--help'." goes: the usage is there.)
fn one_line(rendered: &str) -> String {
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"));
    let mut out = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    let (mut details, mut notes) = (Vec::new(), Vec::new());
    for line in lines {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            notes.push(format!("usage: {usage}"));
        } else if line.starts_with("tip:") {
            notes.push(line.to_owned());
        } else {
            details.push(line);
        }
    }
    if !details.is_empty() {
        out.push(' ');
        out.push_str(&details.join(", "));
    }
    if !notes.is_empty() {
        out.push_str(&format!(" ({})", notes.join("; ")));
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The sample's two programs report every failure in the sample's words, also after
    // `--root PATH`.
    let sample_style = matches!(subcommand_of(&args), Some("server" | "client"));
    let fail = |message: &str, code: u8| {
        if sample_style {
            errln!("The process throws the error: {message}");
        } else {
            errln!("filemap: {message}");
        }
        ExitCode::from(code)
    };
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // `filemap` alone: the usage, on stderr, as for any other bad invocation.
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            return fail(&one_line(&e.render().to_string()), 2);
        }
    };
    let ns = match &cli.root {
        Some(root) => filemap::Namespace::at(root),
        None => filemap::Namespace::new(),
    };
    let result = match cli.command {
        Command::Server(a) => sample::server(&ns, a),
        Command::Client(a) => sample::client(&ns, a),
        Command::Demo(a) => sample::demo(&cli.root, a),
        Command::Create(a) => admin::create(&ns, a),
        Command::Write(a) => admin::write(&ns, a),
        Command::Read(a) => admin::read(&ns, a),
        Command::Ls(a) => admin::ls(&ns, a),
        Command::Info(a) => admin::info(&ns, a),
        Command::Rm(a) => admin::rm(&ns, a),
        Command::Gc => admin::gc(&ns),
        Command::Init => admin::init(&ns),
        Command::Signal(a) => sync::signal(&ns, a),
        Command::Reset(a) => sync::reset(&ns, a),
        Command::Wait(a) => sync::wait(&ns, a),
        Command::Lock(a) => sync::lock(&ns, a),
        Command::Send(a) => channel::send(&ns, a),
        Command::Recv(a) => channel::recv(&ns, a),
        Command::Call(a) => rpc::call(&ns, a),
        Command::Serve(a) => rpc::serve(&ns, a),
        Command::Bench(a) => bench::bench(a),
        Command::BenchChild(a) => match &cli.root {
            Some(root) => bench::child(root, a),
            None => Err("bench-child needs --root".to_owned().into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A command run by `lock` failed: its status is ours, and it spoke for itself.
        Err(f) if f.message.is_empty() => ExitCode::from(f.code),
        Err(f) => fail(&f.message, f.code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("0x10000"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("1m"), Ok(1 << 20));
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("12x").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
        assert!(parse_bytes("17179869184G").is_err());
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert!(parse_mode("9").is_err());
    }

    #[test]
    fn encodings() {
        let msg = "Message from the first process.";
        let bytes = Encoding::Utf16.encode_nul(msg);
        assert_eq!(bytes.len(), 64);
        assert_eq!(Encoding::Utf16.decode_nul(&bytes), msg);
        assert_eq!(Encoding::Utf8.decode_nul(b"abc\0def"), "abc");
        assert_eq!(Encoding::Utf8.decode_nul(b"abc"), "abc");
    }

    #[test]
    fn creation_times_read_as_dates() {
        assert_eq!(admin::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(admin::utc(951_868_799), "2000-02-29 23:59:59 UTC");
        assert_eq!(admin::utc(1_796_010_359), "2026-11-30 03:45:59 UTC");
        assert_eq!(admin::utc(253_402_300_799), "9999-12-31 23:59:59 UTC");
    }

    /// Against date(1), across leap days, century years and year ends.
    #[cfg(unix)]
    #[test]
    fn creation_times_read_as_date_1_prints_them() {
        use std::io::Write;
        let secs: Vec<u64> = (0..2_000u64)
            .map(|i| i * 7_654_321 + i % 86_400)
            .chain([4_107_542_399, 4_107_542_400, 13_574_563_200])
            .collect();
        let input: String = secs.iter().map(|s| format!("@{s}\n")).collect();
        let mut date = std::process::Command::new("date")
            .args(["-u", "-f", "-", "+%Y-%m-%d %H:%M:%S UTC"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("date(1)");
        date.stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = date.wait_with_output().unwrap();
        assert!(out.status.success());
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(want.lines().count(), secs.len());
        for (s, w) in secs.iter().zip(want.lines()) {
            assert_eq!(admin::utc(*s), w, "{s} seconds");
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
