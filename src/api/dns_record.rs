//! `DnsRecord`: one RRset in a zone on a DNS server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// A DNS record set (A, AAAA, CNAME, TXT, …) kept as declared on a DNS server.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "homelab.dev",
    version = "v1alpha1",
    kind = "DnsRecord",
    namespaced,
    status = "DnsRecordStatus",
    shortname = "dns",
    category = "homelab",
    cel,
    printcolumn = r#"{"name":"FQDN","type":"string","jsonPath":".status.fqdn"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Values","type":"string","jsonPath":".status.values"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.target) != (has(self.values) && size(self.values) > 0)").message("set exactly one of values or target"),
    validation = Rule::new("!has(self.target) || self.type == 'A' || self.type == 'AAAA'").message("target is only valid with type A or AAAA"),
    validation = Rule::new("self.type != 'CNAME' || !has(self.values) || size(self.values) == 1").message("a CNAME has exactly one value"),
    validation = Rule::new("self.type != 'CNAME' || self.name != '@'").message("a CNAME cannot be at the zone apex"),
    validation = Rule::new("self.type != 'A' || !has(self.values) || self.values.all(v, v.matches('^((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$'))").message("A values must be IPv4 addresses"),
    validation = Rule::new("self.type != 'AAAA' || !has(self.values) || self.values.all(v, v.matches('^[0-9a-fA-F:.]+$') && v.contains(':'))").message("AAAA values must be IPv6 addresses"),
    validation = Rule::new("!(self.type in ['CNAME', 'NS', 'PTR']) || !has(self.values) || self.values.all(v, v.matches('^([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\\\\.)*[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\\\\.?$'))").message("CNAME, NS and PTR values must be host names (web.home.arpa)"),
    validation = Rule::new("self.type != 'MX' || !has(self.values) || self.values.all(v, v.matches('^[0-9]{1,5} ([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\\\\.)*[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\\\\.?$'))").message("MX values are 'PRIORITY HOST' with a host name (10 mail.home.arpa.)"),
    validation = Rule::new("self.type != 'SRV' || !has(self.values) || self.values.all(v, v.matches('^[0-9]{1,5} [0-9]{1,5} [0-9]{1,5} (([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\\\\.)*[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?\\\\.?|\\\\.)$'))").message("SRV values are 'PRIORITY WEIGHT PORT HOST' with a host name (or . for none)"),
    validation = Rule::new("self.type != 'CAA' || !has(self.values) || self.values.all(v, v.matches('^[0-9]{1,3} [a-zA-Z0-9]+ (\"[^\"]*\"|[^ \"]+)$'))").message("CAA values are 'FLAGS TAG VALUE' (0 issue \"letsencrypt.org\")"),
    validation = Rule::new("self.zone == oldSelf.zone && self.name == oldSelf.name && self.type == oldSelf.type").message("zone, name and type are immutable; create a new DnsRecord instead"),
    validation = Rule::new("self.provider == oldSelf.provider").message("provider is immutable")
)]
pub struct DnsRecordSpec {
    /// Endpoint name in the config's `dns:` section.
    #[serde(default = "default_endpoint")]
    #[schemars(length(min = 1, max = 63))]
    pub provider: String,
    /// The zone, e.g. `home.arpa` (a trailing dot is optional).
    #[schemars(
        regex(pattern = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?$"),
        length(max = 253)
    )]
    pub zone: String,
    /// Name relative to the zone (`web`, `a.b`, `*.apps`), or `@` for the apex.
    #[schemars(
        regex(pattern = r"^(@|(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*|\*)$"),
        length(max = 253)
    )]
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// TTL in seconds (default 300).
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = 604800))]
    pub ttl: u32,
    /// Values in presentation format: addresses, `host.example.` targets, `10 mail.example.`
    /// for MX, text for TXT. Names without a trailing dot are taken as absolute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024)))]
    pub values: Vec<String>,
    /// Publish the addresses of a ProxmoxGuest's NIC in this namespace (IPv4 for A, IPv6 for AAAA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<GuestTarget>,
    /// `Sync` (default: create, update, delete), `UpsertOnly` (never delete) or `CreateOnly` (never change once created).
    #[serde(default)]
    pub policy: RecordPolicy,
    /// What deleting this resource does to the record (default `Delete`).
    #[serde(default = "delete_policy")]
    pub deletion_policy: DeletionPolicy,
    /// Take over an existing record the operator did not create.
    #[serde(default, skip_serializing_if = "is_false")]
    pub adopt: bool,
}

fn default_ttl() -> u32 {
    300
}

fn delete_policy() -> DeletionPolicy {
    DeletionPolicy::Delete
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum RecordType {
    A,
    AAAA,
    CNAME,
    TXT,
    PTR,
    MX,
    SRV,
    NS,
    CAA,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
            RecordType::TXT => "TXT",
            RecordType::PTR => "PTR",
            RecordType::MX => "MX",
            RecordType::SRV => "SRV",
            RecordType::NS => "NS",
            RecordType::CAA => "CAA",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RecordPolicy {
    #[default]
    Sync,
    UpsertOnly,
    CreateOnly,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestTarget {
    /// Name of a ProxmoxGuest in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The guest NIC whose addresses are used, by config slot (`net0`, `net1`, …);
    /// default the first NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^net[0-9]{1,2}$"))]
    pub nic: Option<String>,
}

/// What the operator observed, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecordStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The absolute name, with the trailing dot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// The values the server has now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Ready, Reconciling, Degraded, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
