//! The server's side: a registry of tunnel sessions by node name, and dials
//! through them (what K3s's apiserver does to reach a kubelet).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::frame::{MAX_CONNECT_PAYLOAD, Message};
use crate::session::{OnConnect, Session, SessionError, Shared, TunnelStream};
use crate::ws::WebSocket;

/// Why a dial or a session failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The node has no session (the wording of K3s's tunnel server).
    #[error("failed to find Session for client {0}")]
    NoSession(String),
    /// The target is not `<proto>/<address>` of at most 266 bytes.
    #[error("invalid tunnel target {0:?}")]
    BadTarget(String),
    /// The session ended with an error.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The sessions of connected agents by node name. Cheap to clone: clones
/// share one registry.
#[derive(Debug, Clone, Default)]
pub struct Tunnels {
    inner: Arc<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

/// The server refuses to dial for a client: remotedialer v0.2.0 ends the
/// session on such a `Connect`; an `Error` for that connection is enough.
struct Refuse;

impl OnConnect for Refuse {
    fn connect(&mut self, shared: &Arc<Shared>, message: Message) {
        shared.send_error(message.conn_id, "connect not allowed");
    }
}

impl Tunnels {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the session of `node` over an accepted websocket until it ends.
    /// A newer session for the same node replaces this one (which then ends
    /// with `Ok`, its connections failing), as an agent that reconnects
    /// expects.
    pub async fn serve<S>(&self, node: String, ws: WebSocket<S>) -> Result<(), TunnelError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let session = Session::new(ws);
        let (stop_tx, stop_rx) = oneshot::channel();
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            id,
            shared: Arc::clone(session.shared()),
            stop: Some(stop_tx),
        };
        let replaced = self.lock().insert(node.clone(), entry);
        if let Some(mut old) = replaced {
            if let Some(stop) = old.stop.take() {
                let _ = stop.send(());
            }
        }
        let stop = async {
            // A dropped sender (never: entries keep it) would also stop.
            let _ = stop_rx.await;
        };
        let result = session.run(false, Refuse, stop).await;
        let mut sessions = self.lock();
        if sessions.get(&node).is_some_and(|e| e.id == id) {
            sessions.remove(&node);
        }
        drop(sessions);
        Ok(result?)
    }

    /// Opens a connection through `node`'s session to `target`
    /// (`tcp/127.0.0.1:10250`), with K3s's 15 s dial deadline. Returns at
    /// once: a dial the agent refuses or fails shows as the stream's read
    /// error, with the agent's text.
    pub fn dial(&self, node: &str, target: &str) -> Result<TunnelStream, TunnelError> {
        if target.len() > MAX_CONNECT_PAYLOAD || !target.contains('/') {
            return Err(TunnelError::BadTarget(target.to_owned()));
        }
        let shared = self
            .lock()
            .get(node)
            .map(|e| Arc::clone(&e.shared))
            .filter(|s| !s.is_closed())
            .ok_or_else(|| TunnelError::NoSession(node.to_owned()))?;
        Ok(shared.dial(target))
    }

    /// Whether `node` has a live session.
    pub fn has(&self, node: &str) -> bool {
        self.lock().get(node).is_some_and(|e| !e.shared.is_closed())
    }
}
