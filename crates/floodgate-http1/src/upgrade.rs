//! The seam for protocol upgrades: when a response switches protocols (`101`), the engine
//! hands the connection over as a byte stream, with what it had already read past the
//! request head, to whoever asked for it through the request's [`OnUpgrade`].
//!
//! Nothing after an upgrade request's head is treated as the new protocol unless the
//! answer was `101`: otherwise those bytes are read as the next HTTP request, by the same
//! strict parser.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::wire::Transport;

/// A connection after `101 Switching Protocols`.
pub struct Upgraded {
    /// The connection.
    pub io: Box<dyn Transport>,
    /// Bytes the client sent after the request head, already read off the connection.
    pub read_ahead: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("read_ahead", &self.read_ahead.len())
            .finish_non_exhaustive()
    }
}

/// In the extensions of a request that asks to upgrade: resolves to the connection once a
/// `101` answer has been written.
/// (Request extensions are cloneable; the first clone to ask takes the connection.)
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The upgraded connection, or `None` if the answer did not switch protocols (or
    /// another clone took it).
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self.0.lock().take()?;
        rx.await.ok()
    }
}

/// A fresh pair: the sender for the engine, the receiver for the request.
pub(crate) fn pair() -> (oneshot::Sender<Upgraded>, OnUpgrade) {
    let (tx, rx) = oneshot::channel();
    (tx, OnUpgrade(Arc::new(Mutex::new(Some(rx)))))
}
