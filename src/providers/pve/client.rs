//! Typed Proxmox VE API client over reqwest.

use std::{sync::Arc, time::Duration};

use serde::de::DeserializeOwned;

use super::{
    Error, GuestKind, Params, PveApi, PveUpdateApi,
    codec::{Upid, lenient_u64},
    types::*,
};
use crate::{
    config::ProxmoxEndpoint,
    http::{self, Method},
    metrics::Metrics,
    providers::proxmox_api::{Answer, Endpoint, Failure, ProxmoxApi},
};

/// One Proxmox VE cluster endpoint.
#[derive(Clone, Debug)]
pub struct PveClient {
    api: ProxmoxApi,
    agent_boot_grace: std::time::Duration,
}

fn token_header(id: &str, secret: &str) -> String {
    format!("PVEAPIToken={id}={secret}")
}

impl PveClient {
    pub fn new(ep: &ProxmoxEndpoint, metrics: Option<Arc<Metrics>>) -> Result<Self, http::BuildError> {
        let endpoint = Endpoint {
            url: &ep.url,
            token_id: &ep.token_id,
            secret: &ep.token_secret,
            tls: &ep.tls,
            timeout: ep.timeout,
        };
        Ok(Self {
            api: ProxmoxApi::new("pve", endpoint, metrics)?,
            agent_boot_grace: ep.agent_boot_grace,
        })
    }

    /// One call, with retries for idempotent methods on transient errors.
    async fn call<T: DeserializeOwned>(&self, method: Method, op: &'static str, path: &str, params: &Params) -> Result<T, Error> {
        let once = || self.call_once::<T>(method, op, path, params);
        if method.idempotent() {
            // The agent of a booting guest will not answer within a retry's
            // few seconds; the reconciler asks again later instead.
            self.api
                .retried(once, |e: &Error| e.is_transient() && !e.is_agent_not_running())
                .await
        } else {
            once().await
        }
    }

    async fn call_once<T: DeserializeOwned>(&self, method: Method, op: &'static str, path: &str, params: &Params) -> Result<T, Error> {
        let m = method.as_str();
        let result = match self.api.request(method, path, params, token_header).await {
            Ok(answer) => decode(m, path, answer),
            Err(f) => Err(failure(m, path, f)),
        };
        self.api.record(op, outcome_label(&result));
        result
    }

    fn guest_path(node: &str, kind: GuestKind, vmid: u32) -> String {
        format!("/nodes/{node}/{}/{vmid}", kind.as_str())
    }
}

fn failure(method: &'static str, path: &str, f: Failure) -> Error {
    let path = path.to_string();
    match f {
        Failure::Credentials(m) => Error::Credentials(m),
        Failure::Timeout => Error::Timeout { method, path },
        Failure::Transport(message) => Error::Transport { method, path, message },
    }
}

/// PVE's answer: `{"data": …}`, or an error with its message and per-parameter errors.
fn decode<T: DeserializeOwned>(m: &'static str, path: &str, answer: Answer) -> Result<T, Error> {
    let Answer { status, body } = answer;
    if !status.is_success() {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(|m| m.as_str())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let errors: Vec<(String, String)> = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(|e| e.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let message = describe_api(&message, &errors);
        return Err(Error::Api {
            method: m,
            path: path.to_string(),
            status: status.as_u16(),
            message,
            errors,
        });
    }
    #[derive(serde::Deserialize)]
    struct Envelope<T> {
        data: T,
    }
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize::<_, Envelope<T>>(de)
        .map(|e| e.data)
        .map_err(|e| Error::Decode {
            method: m,
            path: path.to_string(),
            at: e.path().to_string(),
            message: e.inner().to_string(),
        })
}

/// "Parameter verification failed." alone says nothing; add which parameter and why.
fn describe_api(message: &str, errors: &[(String, String)]) -> String {
    if errors.is_empty() {
        return message.to_string();
    }
    let details: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{message} ({})", details.join("; "))
}

fn outcome_label<T>(r: &Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        // A guest still booting: expected, not an error.
        Err(e) if e.is_agent_not_running() => "not_ready",
        Err(e) if e.is_transient() => "transient_error",
        Err(_) => "error",
    }
}

fn upid(s: String, m: &'static str, path: &str) -> Result<Upid, Error> {
    Upid::parse(&s).ok_or_else(|| Error::Decode {
        method: m,
        path: path.to_string(),
        at: "data".into(),
        message: format!("not a UPID: {s:?}"),
    })
}

fn p(pairs: &[(&str, String)]) -> Params {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

impl PveApi for PveClient {
    fn agent_boot_grace(&self) -> std::time::Duration {
        self.agent_boot_grace
    }

    async fn cluster_resources(&self) -> Result<Vec<ClusterResource>, Error> {
        self.call(Method::Get, "cluster_resources", "/cluster/resources", &p(&[("type", "vm".into())]))
            .await
    }

    async fn node_tasks(&self, node: &str, typefilter: &str, since: u64) -> Result<Vec<TaskListEntry>, Error> {
        let path = format!("/nodes/{node}/tasks");
        let params = p(&[
            ("typefilter", typefilter.into()),
            ("since", since.to_string()),
            ("limit", "500".into()),
        ]);
        self.call(Method::Get, "node_tasks", &path, &params).await
    }

    async fn not_backed_up(&self) -> Result<Vec<UnprotectedGuest>, Error> {
        self.call(Method::Get, "not_backed_up", "/cluster/backup-info/not-backed-up", &vec![])
            .await
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        self.call(Method::Get, "nodes", "/nodes", &vec![]).await
    }

    async fn next_id(&self, wanted: Option<u32>) -> Result<u32, Error> {
        // With `vmid`, PVE answers that id when it is free and 400 "already exists" when not.
        let params: Params = wanted.map(|v| vec![("vmid".to_string(), v.to_string())]).unwrap_or_default();
        let v: serde_json::Value = self.call(Method::Get, "next_id", "/cluster/nextid", &params).await?;
        lenient_u64(&v).map(|n| n as u32).ok_or_else(|| Error::Decode {
            method: "GET",
            path: "/cluster/nextid".into(),
            at: "data".into(),
            message: format!("not an integer: {v}"),
        })
    }

    async fn pending(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<Vec<PendingEntry>, Error> {
        let path = format!("{}/pending", Self::guest_path(node, kind, vmid));
        self.call(Method::Get, "pending", &path, &vec![]).await
    }

    async fn create(&self, node: &str, kind: GuestKind, params: Params) -> Result<Upid, Error> {
        let path = format!("/nodes/{node}/{}", kind.as_str());
        let s: String = self.call(Method::Post, "create", &path, &params).await?;
        upid(s, "POST", &path)
    }

    async fn clone_guest(&self, node: &str, kind: GuestKind, template: u32, params: Params) -> Result<Upid, Error> {
        let path = format!("{}/clone", Self::guest_path(node, kind, template));
        let s: String = self.call(Method::Post, "clone", &path, &params).await?;
        upid(s, "POST", &path)
    }

    async fn update_config(&self, node: &str, kind: GuestKind, vmid: u32, params: Params) -> Result<Option<Upid>, Error> {
        let path = format!("{}/config", Self::guest_path(node, kind, vmid));
        match kind {
            // QEMU's POST may start a task (e.g. disk allocation); PUT is the synchronous form LXC has.
            GuestKind::Qemu => {
                let v: Option<String> = self.call(Method::Post, "update_config", &path, &params).await?;
                v.map(|s| upid(s, "POST", &path)).transpose()
            }
            GuestKind::Lxc => {
                let _: serde_json::Value = self.call(Method::Put, "update_config", &path, &params).await?;
                Ok(None)
            }
        }
    }

    async fn resize(&self, node: &str, kind: GuestKind, vmid: u32, disk: &str, size: &str) -> Result<Option<Upid>, Error> {
        let path = format!("{}/resize", Self::guest_path(node, kind, vmid));
        // Absolute sizes only (never "+NG"), so a retried PUT cannot grow a disk twice.
        let v: Option<String> = self
            .call(Method::Put, "resize", &path, &p(&[("disk", disk.into()), ("size", size.into())]))
            .await?;
        v.map(|s| upid(s, "PUT", &path)).transpose()
    }

    async fn power(&self, node: &str, kind: GuestKind, vmid: u32, action: &str) -> Result<Upid, Error> {
        let path = format!("{}/status/{action}", Self::guest_path(node, kind, vmid));
        let s: String = self.call(Method::Post, "power", &path, &vec![]).await?;
        upid(s, "POST", &path)
    }

    async fn delete_guest(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<Upid, Error> {
        let path = Self::guest_path(node, kind, vmid);
        let params = p(&[("purge", "1".into()), ("destroy-unreferenced-disks", "1".into())]);
        let s: String = self.call(Method::Delete, "delete", &path, &params).await?;
        upid(s, "DELETE", &path)
    }

    async fn snapshot(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> Result<Upid, Error> {
        let path = format!("{}/snapshot", Self::guest_path(node, kind, vmid));
        let params = p(&[
            ("snapname", name.into()),
            ("description", "taken by homelab-operator before a risky change".into()),
        ]);
        let s: String = self.call(Method::Post, "snapshot", &path, &params).await?;
        upid(s, "POST", &path)
    }

    async fn rollback(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> Result<Upid, Error> {
        let path = format!("{}/snapshot/{name}/rollback", Self::guest_path(node, kind, vmid));
        let s: String = self.call(Method::Post, "rollback", &path, &vec![]).await?;
        upid(s, "POST", &path)
    }

    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error> {
        let path = format!("/nodes/{}/tasks/{}/status", upid.node, urlencode_path(&upid.raw));
        self.call(Method::Get, "task_status", &path, &vec![]).await
    }

    async fn firewall_options(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<FirewallOptions, Error> {
        let path = format!("{}/firewall/options", Self::guest_path(node, kind, vmid));
        self.call(Method::Get, "firewall_options", &path, &vec![]).await
    }

    async fn set_firewall_options(&self, node: &str, kind: GuestKind, vmid: u32, params: Params) -> Result<(), Error> {
        let path = format!("{}/firewall/options", Self::guest_path(node, kind, vmid));
        let _: serde_json::Value = self.call(Method::Put, "set_firewall_options", &path, &params).await?;
        Ok(())
    }

    async fn firewall_rules(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<Vec<FirewallRuleEntry>, Error> {
        let path = format!("{}/firewall/rules", Self::guest_path(node, kind, vmid));
        self.call(Method::Get, "firewall_rules", &path, &vec![]).await
    }

    async fn create_firewall_rule(&self, node: &str, kind: GuestKind, vmid: u32, params: Params) -> Result<(), Error> {
        let path = format!("{}/firewall/rules", Self::guest_path(node, kind, vmid));
        let _: serde_json::Value = self.call(Method::Post, "create_firewall_rule", &path, &params).await?;
        Ok(())
    }

    async fn delete_firewall_rule(&self, node: &str, kind: GuestKind, vmid: u32, pos: u64) -> Result<(), Error> {
        let path = format!("{}/firewall/rules/{pos}", Self::guest_path(node, kind, vmid));
        let _: serde_json::Value = self.call(Method::Delete, "delete_firewall_rule", &path, &vec![]).await?;
        Ok(())
    }

    async fn guest_interfaces(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<Vec<GuestNic>, Error> {
        let nics: Vec<GuestNic> = match kind {
            GuestKind::Qemu => {
                let path = format!("{}/agent/network-get-interfaces", Self::guest_path(node, kind, vmid));
                let a: AgentInterfaces = self.call(Method::Get, "guest_interfaces", &path, &vec![]).await?;
                a.result
                    .into_iter()
                    .map(|i| GuestNic {
                        name: i.name,
                        mac: i.hardware_address,
                        ips: i.ip_addresses.into_iter().map(|a| a.ip_address).collect(),
                    })
                    .collect()
            }
            GuestKind::Lxc => {
                let path = format!("{}/interfaces", Self::guest_path(node, kind, vmid));
                let list: Vec<LxcInterface> = self.call(Method::Get, "guest_interfaces", &path, &vec![]).await?;
                list.into_iter()
                    .map(|i| GuestNic {
                        name: i.name,
                        mac: i.hwaddr,
                        ips: [i.inet, i.inet6]
                            .into_iter()
                            .flatten()
                            .map(|cidr| cidr.split('/').next().unwrap_or_default().to_string())
                            .collect(),
                    })
                    .collect()
            }
        };
        Ok(nics
            .into_iter()
            .map(|mut n| {
                n.mac = n.mac.map(|m| m.to_uppercase());
                n.ips.retain(|ip| usable_ip(ip));
                n.ips.dedup();
                n
            })
            .filter(|n| n.name != "lo")
            .collect())
    }

    async fn vzdump(&self, node: &str, params: Params) -> Result<Upid, Error> {
        let path = format!("/nodes/{}/vzdump", urlencode_path(node));
        let s: String = self.call(Method::Post, "vzdump", &path, &params).await?;
        upid(s, "POST", &path)
    }

    async fn task_log(&self, u: &Upid) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Line {
            t: String,
        }
        let path = format!("/nodes/{}/tasks/{}/log", u.node, urlencode_path(&u.raw));
        let lines: Vec<Line> = self.call(Method::Get, "task_log", &path, &p(&[("limit", "5000".into())])).await?;
        Ok(lines.into_iter().map(|l| l.t).collect())
    }

    async fn backup_jobs(&self) -> Result<Vec<BackupJob>, Error> {
        self.call(Method::Get, "backup_jobs", "/cluster/backup", &vec![]).await
    }

    async fn create_backup_job(&self, params: Params) -> Result<(), Error> {
        let _: serde_json::Value = self.call(Method::Post, "create_backup_job", "/cluster/backup", &params).await?;
        Ok(())
    }

    async fn update_backup_job(&self, id: &str, params: Params) -> Result<(), Error> {
        let path = format!("/cluster/backup/{}", urlencode_path(id));
        let _: serde_json::Value = self.call(Method::Put, "update_backup_job", &path, &params).await?;
        Ok(())
    }

    async fn delete_backup_job(&self, id: &str) -> Result<(), Error> {
        let path = format!("/cluster/backup/{}", urlencode_path(id));
        let _: serde_json::Value = self.call(Method::Delete, "delete_backup_job", &path, &vec![]).await?;
        Ok(())
    }

    async fn node_storages(&self, node: &str) -> Result<Vec<StorageInfo>, Error> {
        let path = format!("/nodes/{}/storage", urlencode_path(node));
        self.call(Method::Get, "node_storages", &path, &vec![]).await
    }

    async fn storage_content(&self, node: &str, storage: &str, content: Option<&str>) -> Result<Vec<StorageVolume>, Error> {
        let path = format!("/nodes/{}/storage/{}/content", urlencode_path(node), urlencode_path(storage));
        let params: Params = content.map(|c| vec![("content".to_string(), c.to_string())]).unwrap_or_default();
        self.call(Method::Get, "storage_content", &path, &params).await
    }

    async fn node_bridges(&self, node: &str) -> Result<Vec<NetworkInterface>, Error> {
        let path = format!("/nodes/{}/network", urlencode_path(node));
        self.call(Method::Get, "node_bridges", &path, &p(&[("type", "any_bridge".into())]))
            .await
    }
}

fn urlencode_path(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// One client per `proxmox:` endpoint of the config.
pub fn clients_from_config(
    config: &crate::config::Config,
    metrics: Option<Arc<Metrics>>,
) -> Result<std::collections::BTreeMap<String, PveClient>, String> {
    config
        .proxmox
        .iter()
        .map(|(name, ep)| {
            PveClient::new(ep, metrics.clone())
                .map(|c| (name.clone(), c))
                .map_err(|e| format!("proxmox.{name}: {e}"))
        })
        .collect()
}

/// Wait helper for tests and one-shot commands: poll a task until it stops.
pub async fn wait_task<P: PveApi>(api: &P, upid: &Upid, poll: Duration, max: Duration) -> Result<TaskStatus, Error> {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        let st = api.task_status(upid).await?;
        if !st.is_running() {
            return Ok(st);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                method: "GET",
                path: format!("task {}", upid.raw),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

impl PveUpdateApi for PveClient {
    async fn agent_exec(&self, node: &str, vmid: u32, argv: &[String]) -> Result<u64, Error> {
        let path = format!("{}/agent/exec", Self::guest_path(node, GuestKind::Qemu, vmid));
        // An array parameter is sent as the key repeated, one value each.
        let params: Params = argv.iter().map(|a| ("command".to_string(), a.clone())).collect();
        let started: ExecStarted = self.call(Method::Post, "agent_exec", &path, &params).await?;
        Ok(started.pid)
    }

    async fn agent_exec_status(&self, node: &str, vmid: u32, pid: u64) -> Result<ExecStatus, Error> {
        let path = format!("{}/agent/exec-status", Self::guest_path(node, GuestKind::Qemu, vmid));
        self.call(Method::Get, "agent_exec_status", &path, &p(&[("pid", pid.to_string())]))
            .await
    }

    async fn rollback_and_start(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> Result<Upid, Error> {
        let path = format!("{}/snapshot/{name}/rollback", Self::guest_path(node, kind, vmid));
        let s: String = self.call(Method::Post, "rollback", &path, &p(&[("start", "1".into())])).await?;
        upid(s, "POST", &path)
    }

    async fn delete_snapshot(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> Result<Upid, Error> {
        let path = format!("{}/snapshot/{name}", Self::guest_path(node, kind, vmid));
        let s: String = self.call(Method::Delete, "delete_snapshot", &path, &vec![]).await?;
        upid(s, "DELETE", &path)
    }
}
