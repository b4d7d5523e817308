//! `call` and `serve`: a request/reply channel from the shell, as a client that prints
//! each reply and as a server that answers each request through a command (in the manner
//! of inetd: the request on the command's standard input, its standard output the reply).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use filemap::{Error, Namespace, Options, RequestReply, RpcClient};

use crate::channel::failure;
use crate::sync::{parse_secs, EXIT_TIMEOUT};
use crate::wait::{spawn_tied, Stop};
use crate::{parse_bytes, CmdResult, Failure};

/// A request/reply channel's client slots when `call`, `serve` or `create` makes one.
pub(crate) const DEFAULT_CLIENTS: u32 = 8;
/// Its largest request and largest reply, likewise.
pub(crate) const DEFAULT_MAX: u32 = 64 << 10;

/// How often a waiting `serve` looks for a stop signal.
const STOP_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// Name of the request/reply channel (opened, or created if there is none: the call
    /// then waits for a server).
    name: String,
    /// Requests, each sent as one request (its bytes exactly); the replies are written to
    /// standard output in order, each exactly as the server sent it. Without them,
    /// standard input is sent as one request.
    request: Vec<String>,
    /// Give up waiting for a free client slot, or for each reply, after this many seconds
    /// (exit status 124). Without it, a call waits as long as it takes.
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    timeout: Option<Duration>,
    #[command(flatten)]
    geometry: RpcGeometry,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Name of the request/reply channel (opened, or created if there is none).
    name: String,
    /// Answer this many requests, then close the channel and exit (default: until
    /// SIGINT/SIGTERM/SIGHUP, or Ctrl-C, which finish the request at hand first).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Exit with status 124 when no request has come for this many seconds (and none is
    /// being answered).
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    timeout: Option<Duration>,
    /// Answer up to this many requests at once, each with its own run of the command (1:
    /// one after another, in the order they were taken).
    #[arg(long, value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    #[command(flatten)]
    geometry: RpcGeometry,
    /// The command that answers a request: it runs once per request, with the request's
    /// bytes on its standard input, and its standard output is the reply (its standard
    /// error is ours). A command that fails still answers with what it printed; `serve`
    /// says so on standard error and goes on.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct RpcGeometry {
    /// If the channel must be created: its client slots (default 8).
    #[arg(long, value_parser = parse_bytes, value_name = "N")]
    capacity: Option<u64>,
    /// If the channel must be created: the largest request in bytes (default 64K).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    max_message: Option<u64>,
    /// If the channel must be created: the largest reply in bytes (default 64K).
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    max_reply: Option<u64>,
}

/// `v`, or `default`, as a `u32`.
pub(crate) fn number(v: Option<u64>, default: u32, flag: &str) -> Result<u32, Failure> {
    let v = v.unwrap_or(u64::from(default));
    u32::try_from(v).map_err(|_| format!("{flag} {v} is too large").into())
}

fn open(ns: &Namespace, name: &str, g: &RpcGeometry) -> Result<RequestReply, Failure> {
    let clients = number(g.capacity, DEFAULT_CLIENTS, "--capacity")?;
    let max_request = number(g.max_message, DEFAULT_MAX, "--max-message")?;
    let max_reply = number(g.max_reply, DEFAULT_MAX, "--max-reply")?;
    let mut opts = Options::new();
    opts.namespace(ns.clone());
    Ok(opts.open_or_create_request_reply(name, clients, max_request, max_reply)?)
}

/// Reads `input` to its end, refusing more than `max` bytes: `what` names the input, and
/// `limit` the channel's limit, for the error.
fn read_bounded(
    input: &mut impl Read,
    max: usize,
    what: &str,
    limit: &str,
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    input
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading {what}: {e}"))?;
    if buf.len() > max {
        return Err(format!(
            "{what} is larger than the channel's largest {limit} ({max} bytes)"
        ));
    }
    Ok(buf)
}

pub(crate) fn call(ns: &Namespace, a: CallArgs) -> CmdResult {
    let rr = open(ns, &a.name, &a.geometry)?;
    // Standard input first: a slot is not held while the input comes.
    let stdin_request;
    let requests: Vec<&[u8]> = if a.request.is_empty() {
        stdin_request = read_bounded(
            &mut std::io::stdin().lock(),
            rr.max_message(),
            "standard input",
            "request",
        )?;
        vec![&stdin_request]
    } else {
        a.request.iter().map(|r| r.as_bytes()).collect()
    };
    let mut client = free_slot(&rr, a.timeout)?;
    let mut out = std::io::stdout().lock();
    let mut reply = Vec::new();
    for request in requests {
        client
            .call(request, &mut reply, a.timeout)
            .map_err(failure)?;
        out.write_all(&reply)
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing standard output: {e}"))?;
    }
    Ok(())
}

/// A client of `rr`, waiting for a free slot while every one is taken (as a connection
/// waits in a listening socket's backlog), up to `timeout`.
fn free_slot(rr: &RequestReply, timeout: Option<Duration>) -> Result<RpcClient, Failure> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut pause = Duration::from_millis(1);
    loop {
        match rr.client() {
            Err(Error::Busy { .. }) => {}
            r => return Ok(r?),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Failure {
                message: format!(
                    "timed out waiting for a free client slot on the channel {} (all {} are taken)",
                    rr.name(),
                    rr.clients()
                ),
                code: EXIT_TIMEOUT,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

pub(crate) fn serve(ns: &Namespace, a: ServeArgs) -> CmdResult {
    // Signals are taken from here on: before the library starts threads of its own.
    let stop = Stop::start();
    let rr = open(ns, &a.name, &a.geometry)?;
    let max_reply = rr.max_reply();
    let mut server = rr.server()?;
    let replier = server.replier();
    let wanted = a.count.unwrap_or(u64::MAX);
    let mut request = Vec::new();
    let mut taken = 0u64;
    let mut idle_since = Instant::now();
    // Each request is answered in a thread of its own (at most --parallel at once), which
    // says here how it ended; the first failure ends the serving.
    let (done_tx, done_rx) = mpsc::channel::<CmdResult>();
    let mut busy = 0usize;
    let mut failed: Option<Failure> = None;
    let ended = |r: CmdResult, busy: &mut usize, failed: &mut Option<Failure>| {
        *busy -= 1;
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    };
    std::thread::scope(|s| {
        loop {
            while let Ok(r) = done_rx.try_recv() {
                ended(r, &mut busy, &mut failed);
            }
            if failed.is_some() || taken >= wanted || stop.requested().is_some() {
                break;
            }
            if busy > 0 {
                // Idle means no request taken and none being answered.
                idle_since = Instant::now();
            }
            if busy >= usize::from(a.parallel) {
                // Every worker is busy: wait for one (looking for a stop signal meanwhile).
                if let Ok(r) = done_rx.recv_timeout(STOP_POLL) {
                    ended(r, &mut busy, &mut failed);
                }
                continue;
            }
            let ticket = match server.recv(&mut request, Some(STOP_POLL)) {
                Ok(t) => t,
                Err(Error::Timeout { .. }) => {
                    if a.timeout.is_some_and(|t| idle_since.elapsed() >= t) {
                        failed = Some(Failure {
                            message: format!(
                                "timed out waiting for a request on the channel {}",
                                server.name()
                            ),
                            code: EXIT_TIMEOUT,
                        });
                    }
                    continue;
                }
                Err(e) => {
                    failed = Some(failure(e));
                    continue;
                }
            };
            taken += 1;
            busy += 1;
            let (request, replier, done) = (
                std::mem::take(&mut request),
                replier.clone(),
                done_tx.clone(),
            );
            let command = &a.command;
            s.spawn(move || {
                // `false`: the client gave up or died; its reply is dropped, as a socket's
                // would be.
                let r = answer(command, &request, max_reply)
                    .and_then(|reply| replier.reply(ticket, &reply).map(drop).map_err(failure));
                let _ = done.send(r);
            });
        }
        // The requests at hand are answered before the channel closes.
        while busy > 0 {
            match done_rx.recv() {
                Ok(r) => ended(r, &mut busy, &mut failed),
                Err(_) => break,
            }
        }
    });
    failed.map_or(Ok(()), Err)
}

/// Runs `command` with `request` on its standard input and returns what it printed, up to
/// `max` bytes. More than `max` is an error (the request goes unanswered, and `serve`
/// closes the channel, so that its client is not left waiting): a reply is never cut.
fn answer(command: &[String], request: &[u8], max: usize) -> Result<Vec<u8>, Failure> {
    let mut child = spawn_tied(
        Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .map_err(|e| Failure {
        message: format!("cannot run {}: {e}", command[0]),
        code: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    })?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the command's standard input or output was not a pipe"
            .to_owned()
            .into());
    };
    // The request goes in from another thread: a command may print before it has read
    // all of it, and neither pipe may fill up while we wait on the other. A command that
    // does not read its input (or stops early) only closes the pipe on the writer.
    let reply = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(request);
        });
        let reply = read_bounded(&mut stdout, max, "the command's reply", "reply");
        if reply.is_err() {
            // Before the writer is joined: the command may block it by reading nothing more.
            let _ = child.kill();
        }
        reply
    });
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => {
            let _ = child.wait();
            return Err(format!("{e}: the request is not answered").into());
        }
    };
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {}: {e}", command[0]))?;
    if !status.success() {
        errln!(
            "filemap: {} failed on a request ({status}); what it printed ({} bytes) is the reply",
            command[0],
            reply.len()
        );
    }
    Ok(reply)
}
