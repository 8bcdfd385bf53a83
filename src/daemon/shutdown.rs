//! The shutdown signal every task of the daemon listens for (mini-redis' `Shutdown`): the signal
//! task holds the one [`Notice`] and sends it on SIGTERM or SIGINT; every loop holds a
//! [`Shutdown`] and stops at its next safe point once it is sent. A [`Notice`] dropped (the
//! signal task is gone) counts as sent: no task waits on a signal that can never come.

use tokio::sync::watch;

/// The sending side: one, held by the signal task.
pub struct Notice(watch::Sender<bool>);

/// A listener: one per task, cloned from the first.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Notice, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Notice(tx), Shutdown(rx))
}

impl Notice {
    /// Tells every listener to stop.
    pub fn send(&self) {
        self.0.send_replace(true);
    }

    /// Whether it was sent already (a second SIGTERM forces the exit).
    pub fn sent(&self) -> bool {
        *self.0.borrow()
    }
}

impl Shutdown {
    /// Returns once the shutdown is sent (or can no longer be).
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_listener_hears_one_notice_and_a_dropped_notice_ends_the_wait() {
        let (notice, mut a) = channel();
        let mut b = a.clone();
        let waiting = tokio::time::timeout(Duration::from_millis(50), a.recv()).await;
        assert!(
            waiting.is_err(),
            "nothing sent yet, the listener must still wait"
        );
        assert!(!notice.sent());
        notice.send();
        assert!(notice.sent());
        tokio::time::timeout(Duration::from_secs(1), a.recv())
            .await
            .expect("a hears it");
        tokio::time::timeout(Duration::from_secs(1), b.recv())
            .await
            .expect("b hears it too");
        let (notice, mut c) = channel();
        drop(notice);
        tokio::time::timeout(Duration::from_secs(1), c.recv())
            .await
            .expect("no task waits for a signal that can never come");
    }
}
