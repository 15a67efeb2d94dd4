//! The core's tasks: background loops and submissions under way, counted so that
//! shutdown can wait for them and a test can see that none is left. A few lines instead
//! of `tokio_util::task::TaskTracker`, which would add a crate for one counter.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Default)]
pub(super) struct Tasks {
    background: Mutex<Vec<JoinHandle<()>>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    running: AtomicUsize,
    submissions: AtomicUsize,
    idle: Notify,
}

/// Counts a task while it lives; dropped when its future is done or dropped.
pub(super) struct Running {
    counts: Arc<Counts>,
    submission: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.counts.running.fetch_sub(1, Ordering::SeqCst);
        if self.submission {
            self.counts.submissions.fetch_sub(1, Ordering::SeqCst);
        }
        self.counts.idle.notify_waiters();
    }
}

impl Tasks {
    /// Runs `task` in the background until it ends (each watches the core's stop signal).
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let running = self.running(false);
        let handle = tokio::spawn(async move {
            let _running = running;
            task.await;
        });
        let mut all = self
            .background
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|h| !h.is_finished());
        all.push(handle);
    }

    /// The guard of one submission under way (moved into its task).
    pub(super) fn submission(&self) -> Running {
        self.running(true)
    }

    fn running(&self, submission: bool) -> Running {
        self.counts.running.fetch_add(1, Ordering::SeqCst);
        if submission {
            self.counts.submissions.fetch_add(1, Ordering::SeqCst);
        }
        Running {
            counts: self.counts.clone(),
            submission,
        }
    }

    pub(super) fn running_count(&self) -> usize {
        self.counts.running.load(Ordering::SeqCst)
    }

    /// Waits until no submission is under way.
    pub(super) async fn wait_idle_submissions(&self) {
        loop {
            let idle = self.counts.idle.notified();
            if self.counts.submissions.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Waits for every background task spawned so far to end.
    pub(super) async fn wait_all(&self) {
        let all = std::mem::take(
            &mut *self
                .background
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for handle in all {
            let _ = handle.await;
        }
    }
}
