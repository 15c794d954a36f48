//! Notification services in one loopback server: the Telegram Bot API
//! (`/bot<token>/sendMessage`), Discord webhooks (`/api/webhooks/{id}/{token}`),
//! Slack incoming webhooks (`/services/…`), ntfy (`/{topic}`) and a generic
//! webhook receiver (`/hooks/{name}`). Requests are checked as the services
//! check them and refused with their answers (rate limits included); every
//! accepted message is recorded so tests can read it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::server::{SimHandler, SimRequest, SimResponse, SimServer, json_response};

/// A message a service accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// `telegram`, `discord`, `slack`, `ntfy`, `webhook`.
    pub service: &'static str,
    /// The text as the service would show it (ntfy: `Title\nbody`).
    pub text: String,
    /// Headers that matter (`Title`, `Priority`, `Tags`, `X-Homelab-Signature`, …), lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The raw body.
    pub body: String,
}

pub struct NotifySimConfig {
    pub telegram_token: String,
    /// Chats the bot may write to.
    pub telegram_chats: Vec<String>,
    /// `{id}/{token}` of the one Discord webhook.
    pub discord_webhook: String,
    /// `T…/B…/secret` of the one Slack webhook.
    pub slack_path: String,
    /// When set, ntfy topics need `Authorization: Bearer <token>`.
    pub ntfy_token: Option<String>,
}

impl Default for NotifySimConfig {
    fn default() -> Self {
        Self {
            telegram_token: "123456:SIM-telegram-bot-token".into(),
            telegram_chats: vec!["-1001234567890".into()],
            discord_webhook: "1100000000000000001/SIM-discord-webhook-token".into(),
            slack_path: "T0SIM/B0SIM/SIMslackwebhooksecret".into(),
            ntfy_token: None,
        }
    }
}

pub struct NotifySim {
    config: NotifySimConfig,
    received: Mutex<Vec<Received>>,
    /// Injected rate limits: (service, seconds to wait) for the next requests.
    limits: Mutex<VecDeque<(&'static str, f64)>>,
}

impl NotifySim {
    pub fn new(config: NotifySimConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            received: Mutex::new(vec![]),
            limits: Mutex::new(VecDeque::new()),
        })
    }

    pub async fn serve(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone(), false).await
    }

    pub fn config(&self) -> &NotifySimConfig {
        &self.config
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The next `times` requests to `service` get its rate-limit answer, asking to wait `seconds`.
    pub fn rate_limit(&self, service: &'static str, times: usize, seconds: f64) {
        let mut l = self.limits.lock().unwrap();
        l.extend(std::iter::repeat_n((service, seconds), times));
    }

    fn limited(&self, service: &str) -> Option<f64> {
        let mut l = self.limits.lock().unwrap();
        let pos = l.iter().position(|(s, _)| *s == service)?;
        l.remove(pos).map(|(_, secs)| secs)
    }

    fn record(&self, service: &'static str, text: String, req: &SimRequest) {
        let keep = ["title", "priority", "tags", "authorization", "x-homelab-signature", "content-type"];
        let headers = req
            .headers
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = String::from_utf8_lossy(&req.body).into_owned();
        self.received.lock().unwrap().push(Received {
            service,
            text,
            headers,
            body,
        });
    }

    fn respond(&self, req: SimRequest) -> SimResponse {
        if req.method != "POST" {
            return text(405, "method not allowed");
        }
        let path = req.path.clone();
        if let Some(rest) = path.strip_prefix("/bot") {
            return self.telegram(rest, &req);
        }
        if let Some(rest) = path.strip_prefix("/api/webhooks/") {
            return self.discord(rest, &req);
        }
        if let Some(rest) = path.strip_prefix("/services/") {
            return self.slack(rest, &req);
        }
        if path.starts_with("/hooks/") {
            self.record("webhook", String::from_utf8_lossy(&req.body).into_owned(), &req);
            return text(200, "");
        }
        self.ntfy(path.trim_start_matches('/'), &req)
    }

    fn telegram(&self, rest: &str, req: &SimRequest) -> SimResponse {
        let err = |code: u16, d: &str| json_response(code, None, &json!({"ok": false, "error_code": code, "description": d}));
        let Some((token, "sendMessage")) = rest.split_once('/') else {
            return err(404, "Not Found");
        };
        if token != self.config.telegram_token {
            return err(401, "Unauthorized");
        }
        if let Some(secs) = self.limited("telegram") {
            let s = secs.ceil() as u64;
            return json_response(
                429,
                None,
                &json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {s}"), "parameters": {"retry_after": s}}),
            );
        }
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let chat = v["chat_id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| v["chat_id"].as_i64().map(|n| n.to_string()));
        let text_ = v["text"].as_str().unwrap_or("");
        match chat {
            None => return err(400, "Bad Request: chat_id is empty"),
            Some(c) if !self.config.telegram_chats.contains(&c) => return err(400, "Bad Request: chat not found"),
            _ => {}
        }
        if text_.trim().is_empty() {
            return err(400, "Bad Request: message text is empty");
        }
        if text_.chars().count() > 4096 {
            return err(400, "Bad Request: message is too long");
        }
        self.record("telegram", text_.to_string(), req);
        json_response(
            200,
            None,
            &json!({"ok": true, "result": {"message_id": self.received().len(), "text": text_}}),
        )
    }

    fn discord(&self, rest: &str, req: &SimRequest) -> SimResponse {
        let err = |code: u16, m: &str, c: u32| json_response(code, None, &json!({"message": m, "code": c}));
        if rest != self.config.discord_webhook {
            return err(404, "Unknown Webhook", 10015);
        }
        if let Some(secs) = self.limited("discord") {
            let mut r = json_response(
                429,
                None,
                &json!({"message": "You are being rate limited.", "retry_after": secs, "global": false}),
            );
            r.headers_mut()
                .insert("retry-after", secs.ceil().to_string().parse().expect("header"));
            return r;
        }
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let content = v["content"].as_str().unwrap_or("");
        if content.is_empty() {
            return err(400, "Cannot send an empty message", 50006);
        }
        if content.chars().count() > 2000 {
            return err(400, "Invalid Form Body", 50035);
        }
        self.record("discord", content.to_string(), req);
        if req.query.contains("wait=true") {
            json_response(200, None, &json!({"id": "1200000000000000001", "type": 0, "content": content}))
        } else {
            text(204, "")
        }
    }

    fn slack(&self, rest: &str, req: &SimRequest) -> SimResponse {
        if rest != self.config.slack_path {
            return text(404, "no_service");
        }
        if self.limited("slack").is_some() {
            let mut r = text(429, "rate_limited");
            r.headers_mut().insert("retry-after", "1".parse().expect("header"));
            return r;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
            return text(400, "invalid_payload");
        };
        let Some(t) = v["text"].as_str().filter(|t| !t.is_empty()) else {
            return text(400, "no_text");
        };
        self.record("slack", t.to_string(), req);
        text(200, "ok")
    }

    fn ntfy(&self, topic: &str, req: &SimRequest) -> SimResponse {
        let err = |http: u16, code: u32, e: &str| json_response(http, None, &json!({"code": code, "http": http, "error": e}));
        if topic.is_empty() || topic.contains('/') {
            return err(404, 40401, "page not found");
        }
        if let Some(want) = &self.config.ntfy_token {
            let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok());
            if auth != Some(format!("Bearer {want}").as_str()) {
                return err(403, 40301, "forbidden");
            }
        }
        if self.limited("ntfy").is_some() {
            return err(429, 42901, "limit reached: too many requests, please be nice");
        }
        let prio = req.headers.get("priority").and_then(|v| v.to_str().ok());
        if prio.is_some_and(|p| {
            !matches!(
                p,
                "1" | "2" | "3" | "4" | "5" | "min" | "low" | "default" | "high" | "max" | "urgent"
            )
        }) {
            return err(400, 40007, "invalid priority");
        }
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let title = req.headers.get("title").and_then(|v| v.to_str().ok()).unwrap_or("");
        self.record("ntfy", format!("{title}\n{body}"), req);
        json_response(
            200,
            None,
            &json!({"id": "sim0001", "time": jiff::Timestamp::now().as_second(), "event": "message", "topic": topic, "message": body}),
        )
    }
}

impl SimHandler for NotifySim {
    fn handle(&self, req: SimRequest) -> BoxFuture<'_, Option<SimResponse>> {
        Box::pin(async move { Some(self.respond(req)) })
    }
}

fn text(status: u16, body: &str) -> SimResponse {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .expect("valid response")
}

/// A `notifications:` config section for every service of a running simulator,
/// secrets written to files under `dir` (channels `telegram`, `discord`, `slack`, `ntfy`, `webhook`).
pub fn config_section(sim: &NotifySim, server: &SimServer, dir: &std::path::Path) -> std::io::Result<String> {
    let c = &sim.config;
    let file = |name: &str, content: &str| -> std::io::Result<String> {
        let p = dir.join(name);
        std::fs::write(&p, content)?;
        Ok(p.display().to_string())
    };
    let u = &server.url;
    Ok(format!(
        "notifications:\n  telegram: {{type: telegram, apiUrl: \"{u}\", chatId: \"{}\", botTokenFile: {}}}\n  \
         discord: {{type: discord, webhookUrlFile: {}}}\n  slack: {{type: slack, webhookUrlFile: {}}}\n  \
         ntfy: {{type: ntfy, url: \"{u}\", topic: homelab, priority: 4, tags: [rotating_light]}}\n  \
         webhook: {{type: webhook, urlFile: {}, hmacSecretFile: {}}}\n",
        c.telegram_chats[0],
        file("telegram-token", &c.telegram_token)?,
        file("discord-url", &format!("{u}/api/webhooks/{}", c.discord_webhook))?,
        file("slack-url", &format!("{u}/services/{}", c.slack_path))?,
        file("webhook-url", &format!("{u}/hooks/homelab"))?,
        file("webhook-key", "sim-hmac-key")?,
    ))
}
