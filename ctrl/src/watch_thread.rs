//! A control-plane watch thread: its own current-thread tokio runtime
//! running one watch loop until stopped, and the loop's status shared
//! with the caller. The Node, Service and NetworkPolicy threads
//! ([`crate::kube_sync`], [`crate::service_sync`], [`crate::policy_sync`])
//! each run one.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::Notify;

/// A running watch thread with status `S`; stops (and is waited for) on
/// drop or [`WatchThread::stop`].
#[derive(Debug)]
pub struct WatchThread<S> {
    status: Arc<Mutex<S>>,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl<S: Clone + Default + Send + 'static> WatchThread<S> {
    /// Starts thread `name` running `run(status)` on its own runtime;
    /// `no_runtime` records in the status why the runtime could not be
    /// built.
    pub(crate) fn spawn<F, Fut>(
        name: &str,
        no_runtime: impl FnOnce(&mut S, String) + Send + 'static,
        run: F,
    ) -> std::io::Result<WatchThread<S>>
    where
        F: FnOnce(Arc<Mutex<S>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let status = Arc::new(Mutex::new(S::default()));
        let stop = Arc::new(Notify::new());
        let (s, st) = (status.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        set(&s, |x| no_runtime(x, format!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    tokio::select! {
                        () = st.notified() => {}
                        () = run(s) => {}
                    }
                });
            })?;
        Ok(WatchThread {
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// Current status.
    pub fn status(&self) -> S {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        drop(self);
    }
}

impl<S> Drop for WatchThread<S> {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Updates a watch thread's status (a poisoned lock: left as it is).
pub(crate) fn set<S>(status: &Mutex<S>, f: impl FnOnce(&mut S)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}
