//! `signal`, `reset`, `wait` and `lock`: the synchronization objects from the shell.

use std::process::Command;
use std::time::Duration;

use clap::Args;
use filemap::{Error, Event, Kind, Mutex, Namespace, Options, Semaphore};

use crate::{CmdResult, Failure};

/// The exit status of `wait` and `lock` when the timeout passed (as timeout(1)).
pub(crate) const EXIT_TIMEOUT: u8 = 124;
/// The exit status of `wait` when it took a mutex whose owner had died.
pub(crate) const EXIT_ABANDONED: u8 = 3;

/// Parses a timeout in seconds: `5`, `0.25`.
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds (examples: 5, 0.25)"))
}

#[derive(Debug, Args)]
pub(crate) struct NameArg {
    /// Name of the object.
    name: String,
}

#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// Events, semaphores and mutexes to wait for (any one).
    #[arg(required = true, num_args = 1..)]
    names: Vec<String>,
    /// Give up after this many seconds (exit status 124).
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// Name of the mutex (created if it does not exist).
    name: String,
    /// Give up after this many seconds (exit status 124).
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    timeout: Option<Duration>,
    /// The command to run while holding the mutex.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    command: Vec<String>,
}

fn opts(ns: &Namespace) -> Options {
    let mut o = Options::new();
    o.namespace(ns.clone());
    o
}

/// The kind of an existing object, so that `signal`/`reset`/`wait` can open it.
fn kind_of(ns: &Namespace, name: &str) -> Result<Kind, Failure> {
    Ok(ns.kind(name)?)
}

fn wrong_kind(name: &str, found: Kind, wanted: &str) -> Failure {
    let name = filemap::Name::parse(name)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| name.to_owned());
    format!(
        "{name} is {} {found}; {wanted}",
        if found == Kind::Event { "an" } else { "a" }
    )
    .into()
}

pub(crate) fn signal(ns: &Namespace, a: NameArg) -> CmdResult {
    match kind_of(ns, &a.name)? {
        Kind::Event => opts(ns).open_event(&a.name)?.set()?,
        Kind::Semaphore => {
            opts(ns).open_semaphore(&a.name)?.release(1)?;
        }
        k => {
            return Err(wrong_kind(
                &a.name,
                k,
                "signal sets events and releases semaphores",
            ))
        }
    }
    Ok(())
}

pub(crate) fn reset(ns: &Namespace, a: NameArg) -> CmdResult {
    match kind_of(ns, &a.name)? {
        Kind::Event => opts(ns).open_event(&a.name)?.reset()?,
        k => return Err(wrong_kind(&a.name, k, "reset works on events")),
    }
    Ok(())
}

enum Waited {
    Event(Event),
    Semaphore(Semaphore),
    Mutex(Mutex),
}

impl Waited {
    fn waitable(&self) -> &dyn filemap::Waitable {
        match self {
            Waited::Event(e) => e,
            Waited::Semaphore(s) => s,
            Waited::Mutex(m) => m,
        }
    }

    fn name(&self) -> &filemap::Name {
        match self {
            Waited::Event(e) => e.name(),
            Waited::Semaphore(s) => s.name(),
            Waited::Mutex(m) => m.name(),
        }
    }
}

pub(crate) fn wait(ns: &Namespace, a: WaitArgs) -> CmdResult {
    let mut objects = Vec::new();
    for name in &a.names {
        objects.push(match kind_of(ns, name)? {
            Kind::Event => Waited::Event(opts(ns).open_event(name)?),
            Kind::Semaphore => Waited::Semaphore(opts(ns).open_semaphore(name)?),
            Kind::Mutex => Waited::Mutex(opts(ns).open_mutex(name)?),
            k => {
                return Err(wrong_kind(
                    name,
                    k,
                    "wait takes events, semaphores and mutexes",
                ))
            }
        });
    }
    let waitables: Vec<&dyn filemap::Waitable> = objects.iter().map(Waited::waitable).collect();
    let outcome = filemap::wait_any(&waitables, a.timeout).map_err(|e| match e {
        Error::Timeout { .. } => Failure {
            message: format!(
                "timed out waiting for {}",
                objects
                    .iter()
                    .map(|o| o.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            code: EXIT_TIMEOUT,
        },
        e => e.into(),
    })?;
    let fired = &objects[outcome.index()];
    if let Waited::Mutex(m) = fired {
        // Taken and given back: the mutex was free (or abandoned) at this moment.
        m.release()?;
    }
    outln!("{}", fired.name());
    if outcome.is_abandoned() {
        return Err(Failure {
            message: format!(
                "the mutex {} was abandoned: its owner died holding it",
                fired.name()
            ),
            code: EXIT_ABANDONED,
        });
    }
    Ok(())
}

pub(crate) fn lock(ns: &Namespace, a: LockArgs) -> CmdResult {
    let mutex = opts(ns).open_or_create_mutex(&a.name)?;
    let lock = match a.timeout {
        None => mutex.lock(),
        Some(t) => mutex.lock_timeout(t),
    }
    .map_err(|e| match e {
        Error::Timeout { .. } => Failure {
            message: format!("timed out waiting for {}", mutex.name()),
            code: EXIT_TIMEOUT,
        },
        e => e.into(),
    })?;
    if lock.is_abandoned() {
        errln!(
            "filemap: the mutex {} was abandoned by its previous owner; running anyway",
            mutex.name()
        );
    }
    // The command runs to its end before the mutex is released, whatever signals come.
    let status = crate::wait::run_guarded(Command::new(&a.command[0]).args(&a.command[1..]));
    drop(lock);
    let status = status.map_err(|e| Failure {
        message: format!("cannot run {}: {e}", a.command[0]),
        code: if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Failure {
            message: String::new(),
            code: code.clamp(0, 255) as u8,
        }),
        None => {
            #[cfg(unix)]
            let sig = std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0);
            #[cfg(not(unix))]
            let sig = 0;
            Err(Failure {
                message: String::new(),
                code: (128 + sig).clamp(0, 255) as u8,
            })
        }
    }
}
