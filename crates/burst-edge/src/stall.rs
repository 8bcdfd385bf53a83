//! Calls a hung mount can stall in the kernel (a stat, a directory listing or a statvfs on a
//! dead NFS, EFS or sshfs mount waits uninterruptibly), run off the caller's thread, one at a
//! time, with a timeout. The agent's runtime has one thread: such a call on it stops every tick,
//! signal and watchdog ping, and systemd restarts the agent into the same hang.
//!
//! A call that outlives its timeout is left to finish on its own thread (nothing can cancel a
//! system call blocked in the kernel), and no second call starts while it runs: each asks in
//! the meantime gets the hang's story at once. The daemon's runtime shuts down with a timeout,
//! so a hung thread never keeps the agent from stopping. [`OffThread`] runs them; the
//! content-source check and the sampler's statvfs use it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One blocking call at a time, each on a thread of its own, each bounded.
#[derive(Debug, Default)]
pub struct OffThread {
    hung: Option<Hung>,
}

#[derive(Debug)]
struct Hung {
    what: String,
    started: Instant,
    done: Arc<AtomicBool>,
}

impl OffThread {
    /// `Err` while an earlier call still hangs: what it was and for how long.
    fn still_hung(&mut self) -> Result<(), String> {
        match &self.hung {
            Some(h) if !h.done.load(Ordering::Acquire) => Err(format!(
                "{} has not returned for {}s (a hung mount?)",
                h.what,
                h.started.elapsed().as_secs()
            )),
            _ => {
                self.hung = None;
                Ok(())
            }
        }
    }

    /// Starts `f` on a thread of its own; its answer comes on the channel, and the flag says
    /// when it returned (the hang is over).
    fn start<T: Send + 'static>(
        &mut self,
        what: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(Receiver<T>, Arc<AtomicBool>), String> {
        self.still_hung()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        std::thread::Builder::new()
            .name("burst-agent-fs".into())
            .spawn(move || {
                let v = f();
                flag.store(true, Ordering::Release);
                let _ = tx.send(v);
            })
            .map_err(|e| format!("{what}: could not start a thread for it: {e}"))?;
        Ok((rx, done))
    }

    /// What the wait for a started call came to: its answer, or the hang it is left to.
    fn finish<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        done: Arc<AtomicBool>,
        waited: Result<T, RecvTimeoutError>,
    ) -> Result<T, String> {
        match waited {
            Ok(v) => Ok(v),
            Err(RecvTimeoutError::Timeout) => {
                self.hung = Some(Hung {
                    what: what.to_string(),
                    started: Instant::now() - timeout,
                    done,
                });
                Err(format!(
                    "{what} did not return within {timeout:?} (a hung mount?)"
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(format!("{what}: its thread ended without an answer"))
            }
        }
    }

    /// Runs `f` (`what` names it in the errors) on its own thread and waits at most `timeout`,
    /// blocking the caller: for code that runs on a blocking thread already (the sampler).
    pub fn run<T: Send + 'static>(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (rx, done) = self.start(what, f)?;
        let waited = rx.recv_timeout(timeout);
        self.finish(what, timeout, done, waited)
    }

    /// As [`OffThread::run`], awaited: the runtime's thread goes on meanwhile. The wait is
    /// timed on a blocking thread by the real clock, never by tokio's timer, which a paused
    /// runtime (the fault simulation) advances at will.
    pub async fn run_async<T: Send + 'static>(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (rx, done) = self.start(what, f)?;
        let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(timeout))
            .await
            .unwrap_or(Err(RecvTimeoutError::Disconnected));
        self.finish(what, timeout, done, waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_past_its_timeout_is_left_running_and_no_second_one_starts_meanwhile() {
        let mut o = OffThread::default();
        assert_eq!(o.run("quick", Duration::from_secs(5), || 7), Ok(7));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = started.clone();
        let e = o
            .run("stat /mnt/www", Duration::from_millis(100), move || {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = wait.recv();
            })
            .unwrap_err();
        assert!(
            e.contains("stat /mnt/www did not return within 100ms"),
            "{e}"
        );
        // While it hangs, the next call does not start: it is told why at once.
        let s = started.clone();
        let e = o
            .run("stat /mnt/www", Duration::from_secs(5), move || {
                s.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap_err();
        assert!(e.contains("has not returned for"), "{e}");
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Once it returns, calls go again.
        release.send(()).unwrap();
        let t = Instant::now();
        while o
            .hung
            .as_ref()
            .is_some_and(|h| !h.done.load(Ordering::Acquire))
        {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the hung call never ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(o.run("again", Duration::from_secs(5), || 8), Ok(8));
    }

    #[tokio::test]
    async fn awaited_the_runtime_goes_on_while_the_call_hangs() {
        let mut o = OffThread::default();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        // A timer on the same (current-thread) runtime fires while the call hangs.
        let ticker = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            true
        });
        let e = o
            .run_async("statvfs /mnt/www", Duration::from_millis(200), move || {
                let _ = wait.recv();
            })
            .await
            .unwrap_err();
        assert!(e.contains("did not return"), "{e}");
        assert!(ticker.await.unwrap());
        release.send(()).unwrap();
    }
}
