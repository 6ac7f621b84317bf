//! `SIGINT` and `SIGTERM` for the demo: the first one asks it to stop (checked between
//! steps while building, awaited once it runs) and tear down; a second one exits at once,
//! leaving the rest to the slot's guardian, which removes whatever the topology held when its
//! process is gone.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Mutex;

use tokio::signal::unix::{signal, SignalKind};

use super::DemoError;

/// The exit status after a second signal (128 + `SIGINT`).
const EXIT_ON_SECOND_SIGNAL: i32 = 130;

/// Watches for `SIGINT` and `SIGTERM` on a thread of its own. The handlers are installed
/// with `sigaction` (no signal is blocked), so the processes the demo starts get the default
/// dispositions back when they exec.
#[derive(Debug)]
pub struct Signals {
    rx: Mutex<Receiver<&'static str>>,
    first: Mutex<Option<&'static str>>,
}

impl Signals {
    /// Installs the handlers and starts the watching thread.
    pub fn install() -> Result<Signals, DemoError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DemoError::Signals)?;
        let (mut int, mut term) = {
            let _guard = runtime.enter();
            (
                signal(SignalKind::interrupt()).map_err(DemoError::Signals)?,
                signal(SignalKind::terminate()).map_err(DemoError::Signals)?,
            )
        };
        // The terminal's stderr, kept for the second signal's message: the teardown sends fd 2
        // to its log file meanwhile.
        let mut stderr = File::from(
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(DemoError::Signals)?,
        );
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("mesh-demo-signals".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut seen = 0;
                    loop {
                        let name = tokio::select! {
                            _ = int.recv() => "SIGINT",
                            _ = term.recv() => "SIGTERM",
                        };
                        seen += 1;
                        if seen > 1 {
                            // Nothing more can be done if the terminal is gone.
                            let _ = writeln!(
                                stderr,
                                "mesh-demo: second {name}: exiting now; the slot's guardian \
                                 removes what is left"
                            );
                            std::process::exit(EXIT_ON_SECOND_SIGNAL);
                        }
                        // The receiver lives as long as the demo; once it is gone, so is the
                        // need to report.
                        let _ = tx.send(name);
                    }
                });
            })
            .map_err(DemoError::Signals)?;
        Ok(Signals {
            rx: Mutex::new(rx),
            first: Mutex::new(None),
        })
    }

    /// The first signal received so far, if any (does not block).
    pub fn received(&self) -> Option<&'static str> {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
            match rx.try_recv() {
                Ok(name) => *first = Some(name),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        *first
    }

    /// An error when a signal was received: for the checks between build steps.
    pub fn check(&self) -> Result<(), DemoError> {
        match self.received() {
            Some(name) => Err(DemoError::Interrupted(name)),
            None => Ok(()),
        }
    }

    /// Blocks until the first signal (returns at once if one was received already).
    pub fn wait(&self) -> &'static str {
        if let Some(name) = self.received() {
            return name;
        }
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        // The watching thread never ends on its own; if it did, treat it as a stop request.
        let name = rx.recv().unwrap_or("the end of the signal watcher");
        *self.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
        name
    }
}
