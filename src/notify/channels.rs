//! One HTTP request per channel type, and what its answer means: sent,
//! retry after N seconds (rate limits: Telegram `parameters.retry_after`,
//! Discord `retry_after`, `Retry-After` headers), or refused with the
//! service's own words. URLs are never put in an error: they hold tokens.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Attempt, message::Message};
use crate::config::{Channel, ChannelKind};

fn transport(e: reqwest::Error) -> Attempt {
    let e = e.without_url();
    Attempt::Retry {
        after: None,
        error: if e.is_timeout() {
            "timed out".into()
        } else {
            crate::http::describe(&e)
        },
    }
}

fn secret(s: &crate::config::SecretSource, key: &str) -> Result<String, Attempt> {
    s.load(key)
        .map(|v| v.expose().to_string())
        .map_err(|e| Attempt::Failed(e.to_string()))
}

/// `Retry-After: 3` (seconds) from the headers.
fn retry_after_header(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

/// Send one message once.
pub async fn send_http(http: &reqwest::Client, ch: &Channel, msg: &Message) -> Attempt {
    let req = match build(http, ch, msg) {
        Ok(r) => r,
        Err(a) => return a,
    };
    let resp = match req.timeout(ch.timeout).send().await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    let status = resp.status().as_u16();
    let header_wait = retry_after_header(resp.headers());
    let body = resp.text().await.unwrap_or_default();
    interpret(&ch.kind, status, header_wait, &body)
}

fn build(http: &reqwest::Client, ch: &Channel, msg: &Message) -> Result<reqwest::RequestBuilder, Attempt> {
    Ok(match &ch.kind {
        ChannelKind::Telegram {
            api_url,
            bot_token,
            chat_id,
        } => {
            let token = secret(bot_token, "botToken")?;
            let url = format!("{}/bot{token}/sendMessage", api_url.as_str().trim_end_matches('/'));
            http.post(url)
                .json(&json!({"chat_id": chat_id, "text": msg.text(4096), "disable_web_page_preview": true}))
        }
        ChannelKind::Discord { webhook_url } => {
            // wait=true: Discord answers with the message, so a refusal is visible.
            let url = secret(webhook_url, "webhookUrl")?;
            http.post(url)
                .query(&[("wait", "true")])
                .json(&json!({"content": msg.text(2000), "allowed_mentions": {"parse": []}}))
        }
        ChannelKind::Slack { webhook_url } => http.post(secret(webhook_url, "webhookUrl")?).json(&json!({"text": msg.text(3000)})),
        ChannelKind::Ntfy {
            url,
            topic,
            priority,
            tags,
            token,
        } => {
            let mut r = http
                .post(format!("{}/{topic}", url.as_str().trim_end_matches('/')))
                .header("Title", msg.title())
                .body(msg.summary.clone() + if msg.detail.is_empty() { "" } else { "\n" } + &msg.detail);
            if let Some(p) = priority {
                r = r.header("Priority", p.to_string());
            }
            if !tags.is_empty() {
                r = r.header("Tags", tags.join(","));
            }
            if let Some(t) = token {
                r = r.bearer_auth(secret(t, "token")?);
            }
            r
        }
        ChannelKind::Webhook { url, hmac_secret } => {
            let body = json!({
                "event": msg.event.as_str(), "subject": msg.subject, "summary": msg.summary,
                "detail": msg.detail, "time": jiff::Timestamp::now().to_string(),
            })
            .to_string();
            let mut r = http.post(secret(url, "url")?).header("content-type", "application/json");
            if let Some(k) = hmac_secret {
                r = r.header("X-Homelab-Signature", sign(secret(k, "hmacSecret")?.as_bytes(), body.as_bytes()));
            }
            r.body(body)
        }
        ChannelKind::Email(_) => return Err(Attempt::Failed("not an HTTP channel".into())),
    })
}

/// `sha256=<hex>` of HMAC-SHA256 over the body, as GitHub-style receivers check it.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What an answer means, per service.
pub fn interpret(kind: &ChannelKind, status: u16, header_wait: Option<Duration>, body: &str) -> Attempt {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let field = |k: &str| json.as_ref().and_then(|v| v.get(k)).cloned();
    let ok = (200..300).contains(&status);
    match kind {
        // Telegram answers {"ok": false, "description": …, "parameters": {"retry_after": N}}.
        ChannelKind::Telegram { .. } if ok && field("ok") == Some(json!(true)) => Attempt::Sent,
        ChannelKind::Telegram { .. } => {
            let wait = json
                .as_ref()
                .and_then(|v| v["parameters"]["retry_after"].as_f64())
                .map(Duration::from_secs_f64);
            let text = field("description")
                .and_then(|d| d.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            classify(status, wait.or(header_wait), format!("Telegram: {text}"))
        }
        ChannelKind::Discord { .. } if ok => Attempt::Sent,
        ChannelKind::Discord { .. } => {
            let wait = field("retry_after").and_then(|v| v.as_f64()).map(Duration::from_secs_f64);
            let text = field("message")
                .and_then(|d| d.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            classify(status, wait.or(header_wait), format!("Discord: {text}"))
        }
        ChannelKind::Ntfy { .. } if ok => Attempt::Sent,
        ChannelKind::Ntfy { .. } => {
            let text = field("error")
                .and_then(|d| d.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("HTTP {status}"));
            classify(status, header_wait, format!("ntfy: {text}"))
        }
        // Slack answers plain text: `ok`, `invalid_payload`, `no_service`, …
        _ if ok => Attempt::Sent,
        ChannelKind::Slack { .. } => classify(status, header_wait, format!("Slack: HTTP {status} {}", excerpt(body))),
        _ => classify(status, header_wait, format!("webhook: HTTP {status} {}", excerpt(body))),
    }
}

fn excerpt(body: &str) -> String {
    body.trim().chars().take(200).collect()
}

/// 429 and 5xx are worth another try; other refusals are not.
fn classify(status: u16, wait: Option<Duration>, error: String) -> Attempt {
    match status {
        429 => Attempt::Retry {
            after: Some(wait.unwrap_or(Duration::from_secs(1))),
            error,
        },
        s if s >= 500 => Attempt::Retry { after: wait, error },
        _ => Attempt::Failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;

    fn kind(t: &str) -> ChannelKind {
        let s = SecretSource::Env("X".into());
        match t {
            "telegram" => ChannelKind::Telegram {
                api_url: url::Url::parse("https://api.telegram.org").unwrap(),
                bot_token: s,
                chat_id: "1".into(),
            },
            "discord" => ChannelKind::Discord { webhook_url: s },
            _ => ChannelKind::Slack { webhook_url: s },
        }
    }

    #[test]
    fn rate_limits_say_how_long_to_wait() {
        let tg = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#;
        assert!(
            matches!(interpret(&kind("telegram"), 429, None, tg), Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        let dc = r#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#;
        assert!(
            matches!(interpret(&kind("discord"), 429, None, dc), Attempt::Retry { after: Some(d), .. } if d == Duration::from_millis(250))
        );
        assert!(
            matches!(interpret(&kind("slack"), 429, Some(Duration::from_secs(2)), "rate_limited"), Attempt::Retry { after: Some(d), .. } if d.as_secs() == 2)
        );
    }

    #[test]
    fn refusals_carry_the_service_words_and_are_not_retried() {
        let tg = r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#;
        assert!(matches!(interpret(&kind("telegram"), 400, None, tg), Attempt::Failed(e) if e == "Telegram: Bad Request: chat not found"));
        assert!(matches!(interpret(&kind("slack"), 404, None, "no_service"), Attempt::Failed(e) if e.contains("no_service")));
        assert!(matches!(interpret(&kind("slack"), 200, None, "ok"), Attempt::Sent));
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
