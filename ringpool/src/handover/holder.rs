//! The ring holder's side ([`RingHolder::hold`]): the process a
//! [`RingBroker`](super::RingBroker) starts for each ring it hands to a
//! client of another user (or every ring, with
//! [`BrokerOptions::hold_every_ring`](super::BrokerOptions::hold_every_ring)),
//! which holds that ring for the client to duplicate (`sys::holder`).

use std::path::PathBuf;
use std::time::Duration;

use crate::sys;

/// The program a [`RingBroker`] starts for each ring it hands out, which
/// holds the ring's fd (descriptor 3) for its client to duplicate: a
/// program whose first act is [`RingHolder::hold`] (`ringpool hold-ring`
/// is one; `ringpool serve` uses its own binary). It gets the ring, a pipe
/// from the broker as standard input, and nothing else of the broker's:
/// no other descriptor, no environment, none of its memory (a
/// `posix_spawn`, then the exec). For a client of another user the broker
/// adds `--uid U --gid G`, and the holder drops to that user.
#[derive(Debug, Clone)]
pub struct RingHolder {
    /// The program (an absolute path; it is exec'd, not looked up).
    pub program: PathBuf,
    /// Its arguments (before the `--uid`/`--gid` the broker adds).
    pub args: Vec<std::ffi::OsString>,
}

impl RingHolder {
    /// The holder's side, in the process a broker started: reads `--uid U
    /// --gid G` from its arguments (drops to that user, without
    /// supplementary groups), becomes dumpable so that its client may
    /// duplicate the ring, dies with the broker, and waits until the
    /// broker stops it or closes its standard input (at most 30 s). Exits
    /// with 1 when it cannot drop to the user or its arguments are wrong.
    pub fn hold() -> ! {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let value = |flag: &str| -> Option<Option<u32>> {
            match args.iter().position(|a| a == flag) {
                None => Some(None),
                Some(i) => args.get(i + 1).and_then(|v| v.to_str()).and_then(|v| v.parse().ok()).map(Some),
            }
        };
        let fail = |why: &dyn std::fmt::Display| -> ! {
            eprintln!("ring holder: {why}");
            std::process::exit(1)
        };
        let creds = match (value("--uid"), value("--gid")) {
            (Some(None), Some(None)) => None,
            (Some(Some(uid)), Some(Some(gid))) => Some((uid, gid)),
            _ => fail(&"--uid and --gid go together, with numbers"),
        };
        let Some(Some(parent)) = value("--parent") else { fail(&"--parent PID is missing") };
        if let Err(e) = sys::holder::become_holder(creds, parent) {
            fail(&e);
        }
        let timer = std::thread::Builder::new().spawn(|| {
            std::thread::sleep(Duration::from_secs(30));
            std::process::exit(0);
        });
        if let Err(e) = timer {
            fail(&e);
        }
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        loop {
            match std::io::Read::read(&mut stdin, &mut sink) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
                _ => {}
            }
        }
        std::process::exit(0)
    }
}
