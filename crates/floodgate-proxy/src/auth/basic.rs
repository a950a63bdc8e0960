//! HTTP Basic passwords: argon2id PHC strings verified with the parameters inside each
//! string, on the blocking thread pool and at most a few at a time, so a flood of logins
//! cannot take the async workers; a success is remembered for a minute. Shared by route
//! authentication and the OAuth2 token endpoint's client authentication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use tokio::sync::Semaphore;

pub(crate) type Digest = [u8; 32];

pub(crate) fn sha256(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two digests in time independent of where they differ. (Written here: the
/// comparison is four lines, where a crate for it would be one more dependency.)
pub(crate) fn same(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verifies Basic passwords off the async workers, a bounded number at once, remembering
/// successes briefly.
pub struct BasicVerifier {
    permits: Semaphore,
    /// Digest of (password hash, password) → when the success expires.
    remembered: Mutex<HashMap<Digest, Instant>>,
    ttl: Duration,
    most: usize,
}

impl Default for BasicVerifier {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BasicVerifier {
            permits: Semaphore::new(cores.max(2)),
            remembered: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(60),
            most: 10_000,
        }
    }
}

impl BasicVerifier {
    /// Whether `password` matches the argon2id PHC string `phc`.
    pub async fn verify(&self, phc: Arc<str>, password: Vec<u8>) -> bool {
        let mut material = Vec::with_capacity(phc.len() + 1 + password.len());
        material.extend_from_slice(phc.as_bytes());
        material.push(0);
        material.extend_from_slice(&password);
        let key = sha256(&material);
        let now = Instant::now();
        if self
            .remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|until| now < *until)
        {
            return true;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .is_ok_and(|h| Argon2::default().verify_password(&password, &h).is_ok())
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut m = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= self.most {
                m.retain(|_, until| now < *until);
                if m.len() >= self.most {
                    m.clear();
                }
            }
            m.insert(key, now + self.ttl);
        }
        ok
    }
}
