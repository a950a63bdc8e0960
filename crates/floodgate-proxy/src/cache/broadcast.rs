//! Purges across the fleet: a node that purges publishes the order on the cluster's Redis
//! (`<prefix>cache:purge`, pub/sub) and every node applies what the others publish. Pub/sub
//! delivers to nodes connected at that moment; a node that was disconnected keeps what
//! it had until it expires, which is why purges are also answered with where they reached.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CacheState, Purge};
use crate::ratelimit::cluster::ClusterClient;

#[derive(Serialize, Deserialize)]
struct Message {
    node: String,
    purge: Purge,
    /// The fleet's purge count after this one (when the shared tier counted it).
    #[serde(default)]
    purges: Option<u64>,
}

fn channel(cluster: &ClusterClient) -> String {
    format!("{}cache:purge", cluster.prefix())
}

/// Publishes `purge` to the other nodes, with the fleet's purge count after it if the
/// shared tier counted it.
pub async fn publish(
    cluster: &ClusterClient,
    purge: &Purge,
    purges: Option<u64>,
) -> Result<(), String> {
    let msg = Message {
        node: cluster.node_id().to_owned(),
        purge: purge.clone(),
        purges,
    };
    let text = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
    let mut conn = cluster.connection().await.map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(channel(cluster)).arg(text);
    let publish = cmd.query_async::<i64>(&mut conn);
    match tokio::time::timeout(cluster.timeout().max(Duration::from_millis(500)), publish).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Applies the purges other nodes publish, for as long as the process runs; reconnects
/// after a failure.
pub async fn listen(cluster: Arc<ClusterClient>, cache: Arc<CacheState>) {
    let channel = channel(&cluster);
    loop {
        match subscribe_and_apply(&cluster, &cache, &channel).await {
            Ok(()) => tracing::warn!("cache purge subscription ended; subscribing again"),
            Err(e) => tracing::warn!(error = %e, "cache purge subscription failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe_and_apply(
    cluster: &ClusterClient,
    cache: &CacheState,
    channel: &str,
) -> redis::RedisResult<()> {
    use futures_util::StreamExt;
    let mut pubsub = cluster.redis_client().get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    tracing::info!(channel, "listening for the fleet's cache purges");
    // Purges counted before this subscription: their broadcasts were missed.
    let mut p = redis::pipe();
    p.cmd("GET")
        .arg(super::shared::SharedTier::purges_key(cluster.prefix()));
    if let Some((Some(count),)) = cluster.query::<(Option<u64>,)>(&p).await {
        cache.observe_purges(count);
    }
    let mut messages = pubsub.on_message();
    while let Some(m) = messages.next().await {
        let Ok(payload) = m.get_payload::<String>() else {
            continue;
        };
        match serde_json::from_str::<Message>(&payload) {
            Ok(msg) if msg.node != cluster.node_id() => {
                tracing::info!(from = %msg.node, purge = %msg.purge.describe(), "cache purge from the fleet");
                if let Some(count) = msg.purges {
                    cache.observe_purges(count);
                }
                msg.purge.apply(&cache.store());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable cache purge message"),
        }
    }
    Ok(())
}
