//! `MonitorTarget`: one health check the operator runs itself, its state, and
//! who is told when it changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// A health check (exactly one of http, tcp, dns, tls) with thresholds, notifications and maintenance windows.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "homelab.dev",
    version = "v1alpha1",
    kind = "MonitorTarget",
    namespaced,
    status = "MonitorTargetStatus",
    shortname = "mon",
    category = "homelab",
    cel,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".status.checkType"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.target"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Latency","type":"string","jsonPath":".status.latency"}"#,
    printcolumn = r#"{"name":"Uptime 24h","type":"string","jsonPath":".status.uptime24h"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.http), has(self.tcp), has(self.dns), has(self.tls)].filter(x, x).size() == 1").message("set exactly one check: http, tcp, dns or tls"),
    validation = Rule::new("!has(self.http) || has(self.http.url) || has(self.target)").message("http needs url, or a target"),
    validation = Rule::new("!has(self.tcp) || has(self.tcp.host) || has(self.target)").message("tcp needs host, or a target"),
    validation = Rule::new("!has(self.tls) || has(self.tls.host) || has(self.target)").message("tls needs host, or a target"),
    validation = Rule::new("self.timeoutSeconds < self.intervalSeconds").message("timeoutSeconds must be below intervalSeconds")
)]
pub struct MonitorTargetSpec {
    /// An HTTP(S) request and what its answer must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connection, optionally a line sent and one expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A DNS query and its expected answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsCheck>,
    /// A TLS handshake (chain and hostname verified) and the certificate's remaining days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsCheck>,
    /// Instead of a fixed host: a ProxmoxGuest (its address) or ProxyHost (its first domain) in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<MonitorRef>,
    /// How often, how strictly, and who is told.
    #[serde(flatten)]
    pub policy: CheckPolicy,
}

/// How often a check runs, how many results flip the state, who is told and
/// when not: the same for a MonitorTarget and a guest's own monitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckPolicy {
    /// Seconds between checks (at least 10).
    #[serde(default = "default_interval")]
    #[schemars(range(min = 10, max = 86400))]
    pub interval_seconds: u32,
    /// Seconds a check may take.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
    /// Consecutive failures before the state turns Down.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Consecutive successes before the state turns Up again.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: u32,
    /// Who is told, and how often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<MonitorNotify>,
    /// Planned windows: checks run and are recorded, nothing is notified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub maintenance: Vec<MaintenanceWindow>,
    /// Stop checking (state Unknown) until unset.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

/// A health check of the guest itself (`ProxmoxGuest.spec.monitor`): the operator
/// keeps an owned MonitorTarget `<name>-monitor` aimed at the guest's address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.http), has(self.tcp), has(self.tls)].filter(x, x).size() == 1").message("set exactly one check: http, tcp or tls"),
    validation = Rule::new("!has(self.http) || !has(self.http.url)").message("the monitor checks this guest: leave out http.url and set scheme, port and path"),
    validation = Rule::new("!has(self.tcp) || !has(self.tcp.host)").message("the monitor checks this guest: leave out tcp.host"),
    validation = Rule::new("!has(self.tls) || !has(self.tls.host)").message("the monitor checks this guest: leave out tls.host"),
    validation = Rule::new("self.timeoutSeconds < self.intervalSeconds").message("timeoutSeconds must be below intervalSeconds")
)]
pub struct GuestMonitor {
    /// An HTTP(S) request to the guest (`scheme`, `port`, `path`) and what its answer must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connection to the guest's `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A TLS handshake with the guest (the certificate must name its address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsCheck>,
    /// The NIC (`net1`) whose address is checked (default the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^net[0-9]{1,2}$"))]
    pub nic: Option<String>,
    /// How often, how strictly, and who is told.
    #[serde(flatten)]
    pub policy: CheckPolicy,
}

impl GuestMonitor {
    /// The MonitorTarget spec that checks guest `name` this way.
    pub fn target_spec(&self, name: &str) -> MonitorTargetSpec {
        MonitorTargetSpec {
            http: self.http.clone(),
            tcp: self.tcp.clone(),
            dns: None,
            tls: self.tls.clone(),
            target: Some(MonitorRef {
                kind: "ProxmoxGuest".into(),
                name: name.into(),
                nic: self.nic.clone(),
            }),
            policy: self.policy.clone(),
        }
    }
}

fn default_interval() -> u32 {
    60
}
fn default_timeout() -> u32 {
    10
}
fn default_threshold() -> u32 {
    3
}
fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.url) || isURL(self.url) && (self.url.startsWith('http://') || self.url.startsWith('https://'))").message("url must be an http:// or https:// URL"))]
pub struct HttpCheck {
    /// The URL (or leave it out and set `target`, `scheme`, `port`, `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,
    /// With `target`: `http` (default) or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?$"))]
    pub scheme: Option<String>,
    /// With `target`: the port (default 80/443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// With `target`: the path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/.*$"))]
    pub path: Option<String>,
    /// `GET` (default), `HEAD`, `POST`, …
    #[serde(default = "get")]
    #[schemars(regex(pattern = r"^(GET|HEAD|POST|PUT|OPTIONS)$"))]
    pub method: String,
    /// Request headers; values from Secrets of this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
    /// Status codes counted as up (default 200-399).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub expected_status: Vec<u16>,
    /// The body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// The body must match this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_regex: Option<String>,
    /// The JSON body's value at a JSON pointer must equal a value (`{pointer: /status, equals: ok}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonExpect>,
    /// Follow redirects (default true).
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// Verify the certificate (default true; a CA from a Secret for a private one).
    #[serde(default = "yes")]
    pub verify_tls: bool,
    /// PEM CA bundle for a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    /// Slower than this counts as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_response_ms: Option<u32>,
}

fn get() -> String {
    "GET".into()
}
fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// Header name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// A literal value (not for secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonExpect {
    /// RFC 6901 pointer (`/status`).
    #[schemars(regex(pattern = r"^(/.*)?$"))]
    pub pointer: String,
    /// The value there, as JSON text or a plain string (`ok`, `true`, `3`).
    pub equals: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpCheck {
    /// Host name or address (or `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Sent after connecting (e.g. `PING\r\n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// The first bytes read must contain this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsCheck {
    /// The server, `HOST:PORT` (port 53 if left out; an IPv6 address in brackets).
    #[schemars(
        length(min = 1, max = 260),
        regex(
            pattern = r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(:[0-9]{1,5})?$"
        )
    )]
    pub server: String,
    /// The name to ask for.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Record type (default A).
    #[serde(default = "a_record")]
    #[schemars(regex(pattern = r"^(A|AAAA|CNAME|TXT|MX|NS|SRV|PTR|SOA|CAA)$"))]
    pub record_type: String,
    /// The answer must hold exactly these values (any order); unset: any answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected: Vec<String>,
    /// The response code (default NOERROR; `NXDOMAIN` to check a name is gone).
    #[serde(default = "noerror")]
    #[schemars(regex(pattern = r"^(NOERROR|NXDOMAIN|SERVFAIL|REFUSED)$"))]
    pub rcode: String,
}

fn a_record() -> String {
    "A".into()
}
fn noerror() -> String {
    "NOERROR".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsCheck {
    /// Host name (also checked against the certificate) or `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Port (default 443).
    #[serde(default = "https_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Fail when the certificate expires within this many days (default 14).
    #[serde(default = "fourteen")]
    #[schemars(range(min = 0, max = 3650))]
    pub warn_days: u32,
    /// PEM CA bundle for a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

fn https_port() -> u16 {
    443
}
fn fourteen() -> u32 {
    14
}

/// A resource in this namespace whose address the check follows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorRef {
    /// `ProxmoxGuest` or `ProxyHost`.
    #[schemars(regex(pattern = r"^(ProxmoxGuest|ProxyHost)$"))]
    pub kind: String,
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// For a guest: the NIC (`net1`) whose address is used (default the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorNotify {
    /// Channel names in the config's `notifications:` section.
    #[schemars(length(min = 1, max = 20), inner(length(min = 1, max = 63)))]
    pub channels: Vec<String>,
    /// Minutes between reminders while still Down (0: no reminders; default 60).
    #[serde(default = "sixty")]
    #[schemars(range(max = 10080))]
    pub cooldown_minutes: u32,
    /// Tell when it is Up again (default true).
    #[serde(default = "yes")]
    pub notify_recovery: bool,
}

fn sixty() -> u32 {
    60
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// When it starts, in cron syntax (UTC), e.g. `0 3 * * 0`.
    #[schemars(regex(
        pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9*/,-]+ [0-9*/,-]+ [0-9*/,?LW-]+ [0-9A-Za-z*/,-]+ [0-9A-Za-z*/,?L#-]+)$"
    ))]
    pub schedule: String,
    /// How long it lasts, in minutes.
    #[schemars(range(min = 1, max = 10080))]
    pub duration_minutes: u32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum MonitorState {
    Up,
    Down,
    #[default]
    Unknown,
    Maintenance,
}

/// What the checks found, written on state changes and at most once a minute otherwise.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorTargetStatus {
    /// Generation of the spec the checks run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `http`, `tcp`, `dns` or `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_type: Option<String>,
    /// What is checked (URL, host:port, name@server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Up, Down, Unknown or Maintenance.
    #[serde(default)]
    pub state: MonitorState,
    /// Last check (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// Last check's duration (`42ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Last check's result in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failed checks in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Successful checks in a row.
    #[serde(default)]
    pub consecutive_successes: u32,
    /// When the state last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<String>,
    /// Share of checks that succeeded over 24 h and 7 d (`99.93%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime24h: Option<String>,
    /// The same over 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime7d: Option<String>,
    /// The certificate's end of validity, where the check saw one (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiry: Option<String>,
    /// When the Down state was notified (RFC 3339; unset once recovery was sent or when Up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_notified: Option<String>,
    /// The last notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<MonitorNotification>,
    /// Ready (configured and running) and Healthy (the target is Up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorNotification {
    /// `failure`, `reminder` or `recovery`.
    pub event: String,
    /// When (RFC 3339).
    pub time: String,
    /// Each channel and its outcome (`sent`, or the error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<super::ChannelOutcome>,
}
