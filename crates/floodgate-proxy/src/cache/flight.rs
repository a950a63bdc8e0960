//! Request coalescing (cache breakdown): while one request for a key is on its way to the
//! upstream, the others for the same key wait for its outcome instead of going too.
//!
//! The first request leads. Its [`Leader`] publishes how it ended: the response to serve
//! (stored, or an error worth sharing), "not shareable" (the others go upstream on their
//! own), a problem (the others answer the same), or, if the leader is dropped before it
//! says anything (its client went away), "abandoned": one of the waiters then leads in its
//! place, so a cancelled leader never fails the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::store::Entry;
use crate::problem::Problem;

/// How a flight ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Serve this response.
    Serve(Arc<Entry>),
    /// The response cannot be shared: go upstream.
    NotShareable,
    /// The upstream exchange failed: answer the same.
    Failed(Problem),
    /// The leader went away: lead in its place.
    Abandoned,
}

type Slot = Option<Arc<Outcome>>;

/// Where a follower hears the outcome.
pub(crate) type Receiver = watch::Receiver<Slot>;

/// The flights in progress, by cache key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<Arc<str>, (u64, Receiver)>>,
    next_id: AtomicU64,
}

/// A request's place in a flight.
pub(crate) enum Joined {
    /// It leads: fetch, then publish.
    Lead(Leader),
    /// Another leads: wait for it.
    Follow(watch::Receiver<Slot>),
}

impl Flights {
    /// Leads the flight for `key`, or follows the one in progress.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>) -> Joined {
        let mut map = self.map.lock();
        if let Some((_, rx)) = map.get(key) {
            return Joined::Follow(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(key.clone(), (id, rx));
        Joined::Lead(Leader {
            flights: self.clone(),
            key: key.clone(),
            id,
            tx: Some(tx),
        })
    }

    /// Leads the flight for `key` if there is none (a background refresh).
    pub(crate) fn try_lead(self: &Arc<Self>, key: &Arc<str>) -> Option<Leader> {
        match self.join(key) {
            Joined::Lead(l) => Some(l),
            Joined::Follow(_) => None,
        }
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether none is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn end(&self, key: &str, id: u64) {
        let mut map = self.map.lock();
        if map.get(key).is_some_and(|(i, _)| *i == id) {
            map.remove(key);
        }
    }
}

/// Waits up to `limit` for the leader's outcome; `None` when the wait ran out.
pub(crate) async fn wait(mut rx: watch::Receiver<Slot>, limit: Duration) -> Option<Arc<Outcome>> {
    let waited = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
    match waited {
        Ok(Ok(slot)) => slot.clone(),
        // The sender went away without a word.
        Ok(Err(_)) => Some(Arc::new(Outcome::Abandoned)),
        Err(_) => None,
    }
}

/// The leading request of a flight.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: Arc<str>,
    id: u64,
    tx: Option<watch::Sender<Slot>>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader").field("key", &self.key).finish()
    }
}

impl Leader {
    /// Ends the flight with `outcome`.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            // Removed first: a request arriving now finds the stored entry, not the flight.
            self.flights.end(&self.key, self.id);
            tx.send_replace(Some(Arc::new(outcome)));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.publish(Outcome::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "k".into();
        let Joined::Lead(leader) = flights.join(&key) else {
            panic!("first joins lead")
        };
        let Joined::Follow(rx) = flights.join(&key) else {
            panic!("second follows")
        };
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        leader.finish(Outcome::Failed(Problem::UpstreamTimeout));
        let got = waiter.await.unwrap().unwrap();
        assert!(matches!(*got, Outcome::Failed(Problem::UpstreamTimeout)));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_leader_abandons_and_the_key_is_free() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "k".into();
        let leader = flights.try_lead(&key).unwrap();
        assert!(flights.try_lead(&key).is_none());
        let Joined::Follow(rx) = flights.join(&key) else {
            panic!()
        };
        drop(leader);
        let got = wait(rx, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(*got, Outcome::Abandoned));
        assert!(flights.try_lead(&key).is_some());
    }

    #[tokio::test]
    async fn the_wait_is_bounded() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = "k".into();
        let _leader = flights.try_lead(&key).unwrap();
        let Joined::Follow(rx) = flights.join(&key) else {
            panic!()
        };
        assert!(wait(rx, Duration::from_millis(10)).await.is_none());
    }
}
