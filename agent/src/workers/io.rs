//! Moving bytes between this process and a container: its output frames
//! to our stdout and stderr as they come (flushed per frame, so a line
//! appears while the worker still runs), our stdin to its stdin, and the
//! terminal in raw mode while a TTY session lasts.

use std::io::{IsTerminal, Read, Write};
use std::pin::Pin;

use bollard::container::LogOutput;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::error::{Result, WorkerError};

/// Copy output frames to stdout/stderr until the stream ends.
pub async fn pump_output<S>(mut output: S) -> Result<()>
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
{
    while let Some(frame) = output.next().await {
        let frame = frame.map_err(|e| WorkerError::docker("read the container's output", e))?;
        // Writes to our own stdout/stderr are small and local.
        let res = match frame {
            LogOutput::StdErr { message } => {
                let mut e = std::io::stderr().lock();
                e.write_all(&message).and_then(|_| e.flush())
            }
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                let mut o = std::io::stdout().lock();
                o.write_all(&message).and_then(|_| o.flush())
            }
            LogOutput::StdIn { .. } => Ok(()),
        };
        // A closed stdout (e.g. `| head`) ends the copy, not the worker.
        if res.is_err() {
            break;
        }
    }
    Ok(())
}

/// Copy our stdin to `input` and close its write side at EOF (the
/// container then sees EOF). Reads happen on a plain thread: a blocked
/// read must not keep the runtime (and the process) from exiting.
pub fn pump_stdin(mut input: Pin<Box<dyn AsyncWrite + Send>>) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if input.write_all(&chunk).await.is_err() || input.flush().await.is_err() {
                return;
            }
        }
        let _ = input.shutdown().await;
    })
}

/// Puts the terminal on stdin in raw mode; restores it when dropped.
pub struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    pub fn enable() -> RawTerminal {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawTerminal(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal(None);
        }
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}
