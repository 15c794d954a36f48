//! Notifications, shared by every kind that alerts (MonitorTarget,
//! BackupPolicy): named channels from the config, built once; each message
//! retried with backoff (waiting as long as a rate limit says), counted in
//! metrics by channel type and outcome, and never logged with a secret.

pub mod channels;
pub mod email;
pub mod message;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

pub use crate::config::{Channel, ChannelKind};
pub use message::{Event, Message};

use crate::metrics::Metrics;

/// One try at sending.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    Sent,
    /// Worth another try, after `after` when the service said so.
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Refused: trying again will not help.
    Failed(String),
}

/// How a send ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub channel: String,
    pub attempts: u32,
    /// `None` when sent, else the last error.
    pub error: Option<String>,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        if self.error.is_none() { "sent" } else { "failed" }
    }
}

/// Each channel's outcome as status shows it: `sent`, or the error.
pub fn status_rows(outcomes: Vec<Outcome>) -> Vec<crate::api::ChannelOutcome> {
    outcomes
        .into_iter()
        .map(|o| crate::api::ChannelOutcome {
            outcome: o.error.clone().unwrap_or_else(|| "sent".into()),
            channel: o.channel,
        })
        .collect()
}

/// The longest a rate limit is waited for before the send counts as failed.
const MAX_WAIT: Duration = Duration::from_secs(60);
const ATTEMPTS: u32 = 4;

pub struct Notifier {
    channels: BTreeMap<String, Channel>,
    http: reqwest::Client,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Debug, thiserror::Error)]
#[error("notifications.{0}: no such channel in the config")]
pub struct UnknownChannel(pub String);

impl Notifier {
    pub fn new(channels: BTreeMap<String, Channel>, metrics: Option<Arc<Metrics>>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .user_agent(concat!("homelab-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { channels, http, metrics })
    }

    pub fn has(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }

    /// Send to one channel, retrying transient failures: 1 s, 2 s, 4 s apart,
    /// or as long as the service's rate limit says (up to a minute).
    pub async fn send(&self, name: &str, msg: &Message) -> Result<Outcome, UnknownChannel> {
        let ch = self.channels.get(name).ok_or_else(|| UnknownChannel(name.to_string()))?;
        let mut outcome = Outcome {
            channel: name.to_string(),
            attempts: 0,
            error: None,
        };
        let mut backoff = Duration::from_secs(1);
        loop {
            outcome.attempts += 1;
            let attempt = match &ch.kind {
                ChannelKind::Email(e) => email::send(e, ch.timeout, msg).await,
                _ => channels::send_http(&self.http, ch, msg).await,
            };
            match attempt {
                Attempt::Sent => {
                    outcome.error = None;
                    break;
                }
                Attempt::Failed(e) => {
                    outcome.error = Some(e);
                    break;
                }
                Attempt::Retry { after, error } => {
                    let wait = after.unwrap_or(backoff);
                    outcome.error = Some(error);
                    if outcome.attempts >= ATTEMPTS || wait > MAX_WAIT {
                        break;
                    }
                    tracing::debug!(
                        channel = name,
                        attempt = outcome.attempts,
                        ?wait,
                        "notification not sent yet, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    backoff *= 2;
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.notification(ch.type_name(), outcome.label());
        }
        match &outcome.error {
            None => tracing::info!(channel = name, event = msg.event.as_str(), subject = %msg.subject, "notification sent"),
            Some(e) => tracing::warn!(channel = name, attempts = outcome.attempts, error = %e, "notification failed"),
        }
        Ok(outcome)
    }

    /// Send to each channel named, one after the other; the outcome of each.
    pub async fn send_all(&self, names: &[String], msg: &Message) -> Vec<Outcome> {
        let mut out = vec![];
        for n in names {
            out.push(self.send(n, msg).await.unwrap_or_else(|e| Outcome {
                channel: n.clone(),
                attempts: 0,
                error: Some(e.to_string()),
            }));
        }
        out
    }
}
