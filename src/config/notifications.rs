//! The `notifications:` section of the operator config: named channels.
//! Every secret (bot token, webhook URL, SMTP password, HMAC key) comes from a
//! file or an environment variable, as everywhere in the config.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::config::SecretSource;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// Bot API `sendMessage` to one chat.
    Telegram {
        api_url: url::Url,
        bot_token: SecretSource,
        chat_id: String,
    },
    /// A Discord webhook (the URL holds its token: a secret).
    Discord {
        webhook_url: SecretSource,
    },
    /// A Slack incoming webhook (a secret URL).
    Slack {
        webhook_url: SecretSource,
    },
    /// An ntfy topic on a server, with an optional access token.
    Ntfy {
        url: url::Url,
        topic: String,
        priority: Option<u8>,
        tags: Vec<String>,
        token: Option<SecretSource>,
    },
    /// A JSON POST to any URL, signed with HMAC-SHA256 when a secret is set.
    Webhook {
        url: SecretSource,
        hmac_secret: Option<SecretSource>,
    },
    Email(EmailChannel),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailChannel {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub from: String,
    pub to: Vec<String>,
    /// CA bundle for a server with a private certificate.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption at all; only for a relay on loopback or a trusted LAN.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub timeout: Duration,
}

impl Channel {
    /// `telegram`, `discord`, … (the `channel_type` metric label).
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Email(_) => "email",
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Raw {
    #[serde(rename_all = "camelCase")]
    Telegram {
        chat_id: String,
        bot_token_file: Option<PathBuf>,
        bot_token_env: Option<String>,
        api_url: Option<String>,
        timeout_seconds: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    Discord {
        webhook_url_file: Option<PathBuf>,
        webhook_url_env: Option<String>,
        timeout_seconds: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    Slack {
        webhook_url_file: Option<PathBuf>,
        webhook_url_env: Option<String>,
        timeout_seconds: Option<u64>,
    },
    Ntfy(RawNtfy),
    #[serde(rename_all = "camelCase")]
    Webhook {
        url_file: Option<PathBuf>,
        url_env: Option<String>,
        hmac_secret_file: Option<PathBuf>,
        hmac_secret_env: Option<String>,
        timeout_seconds: Option<u64>,
    },
    Email(RawEmail),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawNtfy {
    url: Option<String>,
    topic: String,
    priority: Option<u8>,
    #[serde(default)]
    tags: Vec<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEmail {
    host: String,
    port: Option<u16>,
    security: Option<SmtpSecurity>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    from: String,
    to: Vec<String>,
    ca_file: Option<PathBuf>,
    timeout_seconds: Option<u64>,
}

fn optional(key: &str, file: Option<PathBuf>, env: Option<String>) -> Result<Option<SecretSource>, String> {
    match (file, env) {
        (None, None) => Ok(None),
        (f, e) => SecretSource::from_pair(key, f, e).map(Some),
    }
}

fn url(key: &str, s: &str) -> Result<url::Url, (String, String)> {
    url::Url::parse(s).map_err(|e| (key.to_string(), format!("{e}: {s:?}")))
}

/// Parse every channel; errors are `(key, message)` for the config error.
pub fn parse(section: BTreeMap<String, serde_yaml_ng::Value>) -> Result<BTreeMap<String, Channel>, (String, String)> {
    let mut out = BTreeMap::new();
    for (name, value) in section {
        let key = format!("notifications.{name}");
        let raw: Raw = serde_yaml_ng::from_value(value).map_err(|e| (key.clone(), e.to_string()))?;
        let bad = |m: String| (key.clone(), m);
        let secs = |t: Option<u64>| Duration::from_secs(t.unwrap_or(10).max(1));
        let (kind, timeout) = match raw {
            Raw::Telegram {
                chat_id,
                bot_token_file,
                bot_token_env,
                api_url,
                timeout_seconds,
            } => (
                ChannelKind::Telegram {
                    api_url: url(&format!("{key}.apiUrl"), api_url.as_deref().unwrap_or("https://api.telegram.org"))?,
                    bot_token: SecretSource::from_pair("botToken", bot_token_file, bot_token_env).map_err(bad)?,
                    chat_id,
                },
                secs(timeout_seconds),
            ),
            Raw::Discord {
                webhook_url_file,
                webhook_url_env,
                timeout_seconds,
            } => (
                ChannelKind::Discord {
                    webhook_url: SecretSource::from_pair("webhookUrl", webhook_url_file, webhook_url_env).map_err(bad)?,
                },
                secs(timeout_seconds),
            ),
            Raw::Slack {
                webhook_url_file,
                webhook_url_env,
                timeout_seconds,
            } => (
                ChannelKind::Slack {
                    webhook_url: SecretSource::from_pair("webhookUrl", webhook_url_file, webhook_url_env).map_err(bad)?,
                },
                secs(timeout_seconds),
            ),
            Raw::Ntfy(n) => {
                let timeout = secs(n.timeout_seconds);
                (ntfy(&key, n)?, timeout)
            }
            Raw::Webhook {
                url_file,
                url_env,
                hmac_secret_file,
                hmac_secret_env,
                timeout_seconds,
            } => (
                ChannelKind::Webhook {
                    url: SecretSource::from_pair("url", url_file, url_env).map_err(bad)?,
                    hmac_secret: optional("hmacSecret", hmac_secret_file, hmac_secret_env).map_err(bad)?,
                },
                secs(timeout_seconds),
            ),
            Raw::Email(e) => {
                let timeout = secs(e.timeout_seconds);
                (ChannelKind::Email(email(&key, e)?), timeout)
            }
        };
        out.insert(name.clone(), Channel { name, kind, timeout });
    }
    Ok(out)
}

fn ntfy(key: &str, n: RawNtfy) -> Result<ChannelKind, (String, String)> {
    if n.priority.is_some_and(|p| !(1..=5).contains(&p)) {
        return Err((format!("{key}.priority"), "expected 1 (min) to 5 (max)".into()));
    }
    if n.topic.is_empty() || n.topic.contains('/') {
        return Err((format!("{key}.topic"), format!("expected a topic name, got {:?}", n.topic)));
    }
    Ok(ChannelKind::Ntfy {
        url: url(&format!("{key}.url"), n.url.as_deref().unwrap_or("https://ntfy.sh"))?,
        topic: n.topic,
        priority: n.priority,
        tags: n.tags,
        token: optional("token", n.token_file, n.token_env).map_err(|m| (key.to_string(), m))?,
    })
}

fn email(key: &str, e: RawEmail) -> Result<EmailChannel, (String, String)> {
    let security = e.security.unwrap_or(SmtpSecurity::Starttls);
    let password = optional("password", e.password_file, e.password_env).map_err(|m| (key.to_string(), m))?;
    if password.is_some() != e.username.is_some() {
        return Err((key.to_string(), "set username and passwordFile/passwordEnv together".into()));
    }
    if e.to.is_empty() {
        return Err((format!("{key}.to"), "name at least one recipient".into()));
    }
    let port = e.port.unwrap_or(match security {
        SmtpSecurity::Tls => 465,
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::None => 25,
    });
    Ok(EmailChannel {
        host: e.host,
        port,
        security,
        username: e.username,
        password,
        from: e.from,
        to: e.to,
        ca_file: e.ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(y: &str) -> Result<BTreeMap<String, Channel>, (String, String)> {
        parse(serde_yaml_ng::from_str(y).unwrap())
    }

    #[test]
    fn every_channel_type_parses_with_its_defaults() {
        let c = parse_yaml(
            "tg: {type: telegram, chatId: '-100123', botTokenFile: /s/tg}\n\
             dc: {type: discord, webhookUrlEnv: DISCORD_URL}\n\
             sl: {type: slack, webhookUrlFile: /s/slack}\n\
             nt: {type: ntfy, topic: homelab, priority: 4, tags: [warning]}\n\
             wh: {type: webhook, urlFile: /s/wh, hmacSecretFile: /s/key}\n\
             mail: {type: email, host: smtp.lan, from: ops@home.arpa, to: [me@home.arpa], username: ops, passwordFile: /s/pw}\n",
        )
        .unwrap();
        assert!(matches!(&c["tg"].kind, ChannelKind::Telegram { api_url, .. } if api_url.as_str() == "https://api.telegram.org/"));
        assert!(matches!(&c["nt"].kind, ChannelKind::Ntfy { url, token: None, .. } if url.host_str() == Some("ntfy.sh")));
        assert!(matches!(&c["mail"].kind, ChannelKind::Email(e) if e.port == 587 && e.security == SmtpSecurity::Starttls));
        assert_eq!(c["dc"].type_name(), "discord");
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = parse_yaml("x: {type: discord, webhookUrl: https://discord.com/api/webhooks/1/secret}\n").unwrap_err();
        assert_eq!(e.0, "notifications.x");
        let e = parse_yaml("x: {type: telegram, chatId: '1'}\n").unwrap_err();
        assert!(e.1.contains("botTokenFile or botTokenEnv"), "{e:?}");
        let e = parse_yaml("x: {type: ntfy, topic: t, priority: 9}\n").unwrap_err();
        assert_eq!(e.0, "notifications.x.priority");
        let e = parse_yaml("x: {type: email, host: h, from: a@b, to: [], }\n").unwrap_err();
        assert_eq!(e.0, "notifications.x.to");
        let e = parse_yaml("x: {type: pager}\n").unwrap_err();
        assert!(e.1.contains("unknown variant"), "{e:?}");
    }
}
