//! `ProxyHost`: a reverse-proxy host on Nginx Proxy Manager.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// A proxy host (domains → upstream, TLS, websockets, access list) kept as declared on Nginx Proxy Manager.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "homelab.dev",
    version = "v1alpha1",
    kind = "ProxyHost",
    namespaced,
    status = "ProxyHostStatus",
    shortname = "ph",
    category = "homelab",
    cel,
    printcolumn = r#"{"name":"Domains","type":"string","jsonPath":".spec.domains"}"#,
    printcolumn = r#"{"name":"Upstream","type":"string","jsonPath":".status.upstream"}"#,
    printcolumn = r#"{"name":"TLS","type":"string","jsonPath":".status.tls"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.forward) != has(self.target)").message("set exactly one of forward or target"),
    validation = Rule::new("self.provider == oldSelf.provider").message("provider is immutable")
)]
pub struct ProxyHostSpec {
    /// Endpoint name in the config's `proxy:` section.
    #[serde(default = "default_endpoint")]
    #[schemars(length(min = 1, max = 63))]
    pub provider: String,
    /// Host names this proxy host serves.
    #[schemars(
        length(min = 1, max = 100),
        inner(
            regex(pattern = r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"),
            length(max = 253)
        )
    )]
    pub domains: Vec<String>,
    /// A fixed upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Forward>,
    /// Or a ProxmoxGuest in this namespace: its first address is the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ProxyTarget>,
    /// TLS: an existing certificate or a Let's Encrypt request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ProxyTls>,
    /// Allow websocket upgrades.
    #[serde(default, skip_serializing_if = "is_false")]
    pub websockets: bool,
    /// Block common exploits (default true).
    #[serde(default = "default_true")]
    pub block_exploits: bool,
    /// Cache assets.
    #[serde(default, skip_serializing_if = "is_false")]
    pub caching: bool,
    /// NPM access list id (unset = public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_list_id: Option<u64>,
    /// Extra nginx configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub advanced_config: Option<String>,
    /// Serve the host (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// What deleting this resource does to the proxy host (default `Delete`).
    #[serde(default = "delete_policy")]
    pub deletion_policy: DeletionPolicy,
    /// Take over an existing host that serves one of these domains.
    #[serde(default, skip_serializing_if = "is_false")]
    pub adopt: bool,
}

fn delete_policy() -> DeletionPolicy {
    DeletionPolicy::Delete
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// Upstream scheme, `http` (default) or `https`.
    #[serde(default)]
    pub scheme: Scheme,
    /// Upstream host name or address.
    #[schemars(length(min = 1, max = 255))]
    pub host: String,
    /// Upstream port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTarget {
    /// Name of a ProxmoxGuest in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The guest's port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Upstream scheme, `http` (default) or `https`.
    #[serde(default)]
    pub scheme: Scheme,
    /// The guest NIC whose addresses are used, by config slot (`net0`, `net1`, …);
    /// default the first NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^net[0-9]{1,2}$"))]
    pub nic: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.certificateId) && has(self.letsEncrypt))").message("set at most one of certificateId or letsEncrypt"))]
#[x_kube(validation = Rule::new("!self.forceSsl || has(self.certificateId) || has(self.letsEncrypt)").message("forceSsl needs a certificate (certificateId or letsEncrypt)"))]
pub struct ProxyTls {
    /// Id of an existing NPM certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub certificate_id: Option<u64>,
    /// Request a Let's Encrypt certificate for the domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lets_encrypt: Option<LetsEncrypt>,
    /// Redirect HTTP to HTTPS.
    #[serde(default)]
    pub force_ssl: bool,
    /// HTTP/2.
    #[serde(default)]
    pub http2: bool,
    /// HSTS.
    #[serde(default)]
    pub hsts: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LetsEncrypt {
    /// Account email for Let's Encrypt.
    #[schemars(regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: String,
}

/// What the operator observed, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyHostStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nginx Proxy Manager's id of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<u64>,
    /// `scheme://host:port` the host forwards to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `none`, `certificate <id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// Whether nginx accepted the configuration (NPM `meta.nginx_online`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx_online: Option<bool>,
    /// nginx's complaint when it did not (`meta.nginx_err`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx_error: Option<String>,
    /// Ready, Reconciling, Degraded, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
