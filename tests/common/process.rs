//! Running the workspace's binaries and examples as bounded child processes:
//! a watchdog SIGKILLs a child that outlives its time, and [`KillOnDrop`]
//! reaps a background child when a test panics before it is done with it.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Runs `cmd` with `stdin` as its input (closed at once when `None`) and
/// collects its output; SIGKILLed if still running after `timeout`.
pub fn output_within(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    // A writer thread, so a child that does not read its stdin cannot block us.
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut input)) => {
            let data = data.to_vec();
            // A child that exits without reading all of it closes the pipe: not our error.
            Some(std::thread::spawn(move || {
                let _ = input.write_all(&data);
            }))
        }
        _ => None,
    };
    let out = wait_output_within(child, timeout);
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    out
}

/// Waits for `child` and collects its output; SIGKILLed if still running after `timeout`.
pub fn wait_output_within(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(timeout).is_err() {
            // SAFETY: kill(2) on our own child's pid; it is not reaped (so the pid
            // is not reused) until wait_with_output below returns.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    });
    let out = child.wait_with_output().expect("wait for child");
    // The watchdog may have fired already and dropped its receiver.
    let _ = done_tx.send(());
    watchdog.join().expect("watchdog");
    out
}

/// Lossy UTF-8 of captured output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts `out` is a success and returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A child process that is SIGKILLed and reaped when dropped unless taken back.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Guards `child`.
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// The guarded child.
    pub fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("child not taken")
    }

    /// Takes the child back; it is no longer killed on drop.
    pub fn take(mut self) -> Child {
        self.0.take().expect("child not taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asserts a failure with exactly one `error: ...` line on stderr (and no
/// panic); returns that line.
pub fn one_line_error(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "stderr: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{stderr}"
    );
    errors[0].to_string()
}
