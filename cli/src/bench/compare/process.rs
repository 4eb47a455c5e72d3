//! Child processes that do not outlive `bench compare`: a guard kills its process when dropped
//! (so an error unwinding through it too), and Ctrl-C or SIGTERM kills every live one, removes
//! the temporary directories, then ends conclavectl.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, Once};

use anyhow::{Context, Result};

/// What a signal must clean up: the pids of spawned children not reaped yet, and directories.
struct Live {
    pids: BTreeSet<u32>,
    dirs: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live { pids: BTreeSet::new(), dirs: Vec::new() });

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// From now on, Ctrl-C and SIGTERM kill the live children and remove the directories before
/// conclavectl exits (with 130, as a shell reports an interrupted command).
pub fn clean_up_on_signal() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Installing tokio's handlers replaces the default action (die at once) before it
        // returns, so this waits for them to be in place.
        let (installed, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                    return;
                };
                let _ = installed.send(());
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                let live = live();
                for &pid in &live.pids {
                    // SAFETY: kill(2) takes any pid; these are children not reaped yet, so the
                    // pid is still theirs.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                for dir in &live.dirs {
                    let _ = std::fs::remove_dir_all(dir);
                }
                eprintln!("interrupted: killed the members and removed their data");
                std::process::exit(130);
            });
        });
        let _ = done.recv();
    });
}

/// Remove `dir` too if a signal ends conclavectl.
pub fn remove_on_signal(dir: PathBuf) {
    live().dirs.push(dir);
}

/// Spawns `command` and remembers its pid until it is reaped.
fn spawn(command: &mut Command) -> Result<Child> {
    let mut live = live();
    let child = command.spawn().with_context(|| format!("spawning {}", command.get_program().to_string_lossy()))?;
    live.pids.insert(child.id());
    Ok(child)
}

fn reaped(pid: u32) {
    live().pids.remove(&pid);
}

/// A running child, killed and reaped when dropped.
pub struct Guarded(Child);

impl Guarded {
    pub fn spawn(command: &mut Command) -> Result<Guarded> {
        spawn(command).map(Guarded)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.0.try_wait().ok().flatten();
        if status.is_some() {
            reaped(self.0.id());
        }
        status
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // A child already reaped is not signalled again (its pid may be another's by now).
        let _ = self.0.kill();
        let _ = self.0.wait();
        reaped(self.0.id());
    }
}

/// Runs `command` to its end, as [`Command::output`], killed by a signal like the others.
pub fn output(command: &mut Command) -> Result<Output> {
    let child = spawn(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let pid = child.id();
    let output = child.wait_with_output();
    reaped(pid);
    Ok(output?)
}
