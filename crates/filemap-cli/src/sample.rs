//! CSFileMappingServer and CSFileMappingClient, and the demo that runs them together.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::Args;
use filemap::{Access, Namespace, Options};

use crate::wait::Waiter;
use crate::{parse_bytes, CmdResult, Encoding, Failure};

/// The sample's constants (CSFileMappingServer, Program.cs).
const MAP_NAME: &str = "Local\\SampleMap";
const MAP_SIZE: &str = "65536";
const VIEW_SIZE: &str = "1024";
const MESSAGE: &str = "Message from the first process.";
const PROMPT: &str = "Press ENTER to clean up resources and quit";

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Name of the mapping.
    #[arg(long, default_value = MAP_NAME)]
    name: String,
    /// Size of the mapping in bytes.
    #[arg(long, default_value = MAP_SIZE, value_parser = parse_bytes, value_name = "BYTES")]
    size: u64,
    /// Offset of the view in the mapping.
    #[arg(long, default_value = "0", value_parser = parse_bytes, value_name = "N")]
    view_offset: u64,
    /// Size of the view; 0 means to the end of the mapping.
    #[arg(long, default_value = VIEW_SIZE, value_parser = parse_bytes, value_name = "N")]
    view_size: u64,
    /// The message to write; a NUL terminator is added.
    #[arg(long, default_value = MESSAGE, value_name = "TEXT")]
    message: String,
    /// Encoding of the message.
    #[arg(long, value_enum, default_value = "utf16")]
    encoding: Encoding,
}

#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// Name of the mapping.
    #[arg(long, default_value = MAP_NAME)]
    name: String,
    /// If the server is not there yet, wait for it (for the event NAME.ready that it sets).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds (exit status 124).
    #[arg(long, requires = "wait", value_parser = crate::sync::parse_secs, value_name = "SECS")]
    timeout: Option<std::time::Duration>,
    /// Offset of the view in the mapping.
    #[arg(long, default_value = "0", value_parser = parse_bytes, value_name = "N")]
    view_offset: u64,
    /// Size of the view; 0 means to the end of the mapping.
    #[arg(long, default_value = VIEW_SIZE, value_parser = parse_bytes, value_name = "N")]
    view_size: u64,
    /// Encoding of the message.
    #[arg(long, value_enum, default_value = "utf16")]
    encoding: Encoding,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Name of the mapping the two processes share.
    #[arg(long, default_value = MAP_NAME)]
    name: String,
}

/// The manual-reset event that a server sets once its message is in place: the mapping's
/// name with `.ready` appended (`Local\SampleMap.ready`).
fn ready_event_name(mapping: &str) -> String {
    let canonical = filemap::Name::parse(mapping)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| mapping.to_owned());
    format!("{canonical}.ready")
}

/// Prints to stdout and flushes; a closed stdout must not stop the cleanup.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

pub(crate) fn server(ns: &Namespace, a: ServerArgs) -> CmdResult {
    let mapping = Options::new()
        .namespace(ns.clone())
        .open_or_create(&a.name, a.size)?;
    let name = mapping.name().map(|n| n.to_string()).unwrap_or(a.name);
    if mapping.already_existed() {
        say(&format!(
            "The file mapping ({name}) already exists and is opened\n"
        ));
    } else {
        say(&format!("The file mapping ({name}) is created\n"));
    }
    let view = mapping.map_view(Access::ReadWrite, a.view_offset, a.view_size)?;
    say("The file view is mapped\n");
    let bytes = a.encoding.encode_nul(&a.message);
    if bytes.len() > view.len() {
        return Err(format!(
            "the message needs {} bytes but the view holds only {}",
            bytes.len(),
            view.len()
        )
        .into());
    }
    view.write_at(0, &bytes)?;
    // Tell clients started with --wait that the mapping is ready. A name too long for the
    // suffix just has no ready event.
    let ready = match Options::new().namespace(ns.clone()).open_or_create_event(
        &ready_event_name(&name),
        true,
        false,
    ) {
        Ok(event) => Some(event),
        Err(filemap::Error::NameTooLong { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(ready) = &ready {
        ready.set()?;
    }
    say(&format!(
        "This message is written to the view:\n\"{}\"\n",
        a.message
    ));
    let waiter = Waiter::start();
    say(PROMPT);
    waiter.wait();
    if let Some(ready) = ready {
        ready.reset()?;
    }
    drop(view);
    drop(mapping);
    Ok(())
}

pub(crate) fn client(ns: &Namespace, a: ClientArgs) -> CmdResult {
    if a.wait {
        let ready_name = ready_event_name(&a.name);
        let ready =
            Options::new()
                .namespace(ns.clone())
                .open_or_create_event(&ready_name, true, false)?;
        let waited = match a.timeout {
            Some(t) => ready.wait_timeout(t),
            None => ready.wait(),
        };
        if let Err(filemap::Error::Timeout { .. }) = waited {
            return Err(Failure {
                message: format!(
                    "no server for {} appeared in time (waited for {ready_name})",
                    a.name
                ),
                code: crate::sync::EXIT_TIMEOUT,
            });
        }
        waited?;
    }
    let mapping = Options::new()
        .namespace(ns.clone())
        .open(&a.name, Access::Read)?;
    let name = mapping.name().map(|n| n.to_string()).unwrap_or(a.name);
    say(&format!("The file mapping ({name}) is opened\n"));
    let view = mapping.map_view(Access::Read, a.view_offset, a.view_size)?;
    say("The file view is mapped\n");
    let mut bytes = vec![0u8; view.len()];
    view.read_at(0, &mut bytes)?;
    let message = a.encoding.decode_nul(&bytes);
    say(&format!("Read from the file mapping:\n\"{message}\"\n"));
    let waiter = Waiter::start();
    say(PROMPT);
    waiter.wait();
    drop(view);
    drop(mapping);
    Ok(())
}

/// A child process of the demo, with its output arriving on a channel.
struct Peer {
    label: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

const DEMO_TIMEOUT: Duration = Duration::from_secs(30);

impl Peer {
    fn spawn(label: &'static str, root: &Option<PathBuf>, args: &[&str]) -> Result<Peer, Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the filemap executable: {e}"))?;
        let mut cmd = Command::new(exe);
        if let Some(root) = root {
            cmd.arg("--root").arg(root);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the {label}: {e}"))?;
        let (tx, lines) = mpsc::channel();
        // Lines end with a newline, except the prompt, which waits on the same line.
        let stdout = child.stdout.take().expect("piped");
        let tx_err = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = reader.read(&mut byte) {
                if byte[0] == b'\n' {
                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                    line.clear();
                } else {
                    line.push(byte[0]);
                    if line == PROMPT.as_bytes() {
                        let _ = tx.send(PROMPT.to_owned());
                        line.clear();
                    }
                }
            }
        });
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx_err.send(format!("(stderr) {line}"));
            }
        });
        let stdin = child.stdin.take();
        Ok(Peer {
            label,
            child,
            stdin,
            lines,
        })
    }

    /// Shows the peer's lines until its prompt.
    fn show_until_prompt(&mut self) -> CmdResult {
        let deadline = Instant::now() + DEMO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    outln!("[{}] {line}", self.label);
                    if line == PROMPT {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(
                        format!("the {} did not reach its prompt in time", self.label).into(),
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!("the {} stopped early ({status})", self.label).into());
                }
            }
        }
    }

    /// Presses ENTER and waits for a clean exit.
    fn press_enter(&mut self) -> CmdResult {
        outln!("[demo] pressing ENTER in the {}", self.label);
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let deadline = Instant::now() + DEMO_TIMEOUT;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                outln!("[{}] {line}", self.label);
            }
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                if !status.success() {
                    return Err(format!("the {} failed ({status})", self.label).into());
                }
                outln!("[demo] the {} exited cleanly", self.label);
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the {} did not exit in time", self.label).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn demo(root: &Option<PathBuf>, a: DemoArgs) -> CmdResult {
    outln!(
        "[demo] starting the server: filemap server --name {}",
        a.name
    );
    let mut server = Peer::spawn("server", root, &["server", "--name", &a.name])?;
    server.show_until_prompt()?;
    outln!(
        "[demo] starting the client: filemap client --name {}",
        a.name
    );
    let mut client = Peer::spawn("client", root, &["client", "--name", &a.name])?;
    client.show_until_prompt()?;
    client.press_enter()?;
    server.press_enter()?;
    let ns = match root {
        Some(r) => Namespace::at(r),
        None => Namespace::new(),
    };
    match Options::new().namespace(ns).open(&a.name, Access::Read) {
        Err(filemap::Error::NotFound { .. }) => {
            outln!(
                "[demo] both processes closed {}, so it no longer exists",
                a.name
            );
            Ok(())
        }
        Ok(_) => Err(format!(
            "{} still exists after both processes closed it (is another server running?)",
            a.name
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}
