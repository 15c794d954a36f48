//! `export`: what already runs, read read-only from the live systems, as
//! manifests with `adopt: true` (`adoptJobId` for a backup job) that `plan`
//! finds unchanged but for the ownership marks adopting adds: per Proxmox VE
//! cluster its guests (`OUT/<cluster>/guests/`) and vzdump jobs
//! (`OUT/<cluster>/backups/`), the hosts of every Nginx Proxy Manager
//! (`OUT/<endpoint>/proxy-hosts/`) and the RRsets of each `--zone`
//! (`OUT/<endpoint>/dns/<zone>/`), one file each. Names never take one the
//! namespace's resources already have (read from the marks on the servers).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;

use super::oneshot::Engine;
use crate::{
    api::{GuestType, ProxmoxGuest},
    config::{Config, ConfigArg},
    metrics::Metrics,
    providers::pve::{ClusterResource, PveApi, PveClient},
    reconcile::{
        backup_policy::exported::{self as backup_exported, ExportedPolicy},
        ownership::{has_mark, is_mark_tag, owner_in},
        proxmox_guest::{
            exported::{Exported, GuestFacts, spec_of},
            observed_from, read_config, read_firewall,
        },
    },
};

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Namespace of the exported resources.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Directory the manifests are written to (created when missing).
    #[arg(long, default_value = "exported")]
    pub out: PathBuf,
    /// Only this Proxmox VE endpoint of the config (default: every one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only these VMIDs (repeatable).
    #[arg(long)]
    pub vmid: Vec<u32>,
    /// Only guests on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only guests with this Proxmox tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only guests in this resource pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Only guests whose name contains this text.
    #[arg(long)]
    pub name: Option<String>,
    /// Export the records of this DNS zone (`ZONE` on every `dns:` endpoint that can list a
    /// zone, or `ENDPOINT/ZONE`); repeatable. Without it no records are exported.
    #[arg(long)]
    pub zone: Vec<String>,
    /// Print the summary only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ExportArgs {
    /// Whether guests are picked one by one: then only guests are exported.
    fn filters_guests(&self) -> bool {
        !self.vmid.is_empty() || self.node.is_some() || self.tag.is_some() || self.pool.is_some() || self.name.is_some()
    }

    fn selects(&self, r: &ClusterResource) -> bool {
        let name = r.name.as_deref().unwrap_or("");
        (self.vmid.is_empty() || self.vmid.contains(&(r.vmid as u32)))
            && self.node.as_ref().is_none_or(|n| &r.node == n)
            && self.tag.as_ref().is_none_or(|t| r.tag_list().contains(t))
            && self.pool.as_ref().is_none_or(|p| r.pool.as_ref() == Some(p))
            && self.name.as_ref().is_none_or(|n| name.contains(n.as_str()))
    }
}

/// One exported guest, as the summary reports it.
struct Written {
    file: PathBuf,
    name: String,
    vmid: u32,
    exported: Exported,
    /// `member_label`s of the exported backup jobs that back it up.
    labels: BTreeMap<String, String>,
}

/// One exported backup job.
struct Policy {
    file: PathBuf,
    name: String,
    job: String,
    exported: ExportedPolicy,
}

/// Exit 0 when everything selected was exported, 1 on an error.
pub async fn run(a: ExportArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.config.config)?;
    let engine = Engine::new(&config, Arc::new(Metrics::default()))?;
    let mut names = BTreeSet::new();
    let mut written = vec![];
    let mut policies = vec![];
    let mut skipped = vec![];
    for (cluster, client) in &engine.providers.pve {
        if a.cluster.as_ref().is_some_and(|c| c != cluster) {
            continue;
        }
        let resources = client
            .cluster_resources()
            .await
            .with_context(|| format!("cluster {cluster}: listing guests"))?;
        // Templates are sources, not guests; a guest the operator already marks has its resource.
        let marked = |r: &&ClusterResource| !r.template && r.tag_list().iter().any(|t| is_mark_tag(t));
        reserve_guest_names(&a.namespace, client, resources.iter().filter(marked), &mut names).await;
        let unmanaged = |r: &&ClusterResource| !r.template && !marked(r);
        let mut guests: Vec<&ClusterResource> = resources.iter().filter(unmanaged).filter(|r| a.selects(r)).collect();
        guests.sort_by_key(|r| r.vmid);
        // Names first (in VMID order, so a clash always resolves the same way), then the reads, a few at once.
        let named: Vec<(&ClusterResource, String)> = guests.into_iter().map(|r| (r, unique_name(r, &mut names))).collect();
        let reads = named.into_iter().map(|(r, name)| export_guest(&a, cluster, client, r, name));
        let done: Vec<anyhow::Result<Written>> = futures::stream::iter(reads).buffered(EXPORT_CONCURRENCY).collect().await;
        let mut guests = done.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        if !a.filters_guests() {
            policies.extend(export_jobs(&a, cluster, client, &mut guests, &mut skipped).await?);
        }
        written.extend(guests);
    }
    if !a.dry_run {
        for w in &written {
            write_manifest(&w.file, &guest_manifest(&a.namespace, w)?)?;
        }
    }
    let hosts = export_proxy_hosts(&a, &engine).await?;
    let mut records = export_records(&a, &engine).await?;
    records.skipped.extend(skipped);
    summary(&a, &written, &policies, &hosts, &records);
    Ok(if records.failed.is_empty() { 0 } else { 1 })
}

/// The names of the namespace's ProxmoxGuests that manage guests already (read
/// from their marks), so an exported guest never takes one: applying it would
/// replace that resource. A guest whose config cannot be read reserves nothing.
async fn reserve_guest_names<'a>(
    namespace: &str,
    client: &PveClient,
    marked: impl Iterator<Item = &'a ClusterResource>,
    names: &mut BTreeSet<String>,
) {
    let reads = marked.map(|r| async move {
        let g = observed_from(r, if r.kind == "lxc" { GuestType::Lxc } else { GuestType::Qemu });
        read_config(client, &g).await.ok()?.effective("description").map(str::to_string)
    });
    let descriptions: Vec<Option<String>> = futures::stream::iter(reads).buffered(EXPORT_CONCURRENCY).collect().await;
    reserve(namespace, descriptions.iter().flatten().map(String::as_str), names);
}

/// Reserve the names that `marks` give to resources of `namespace`.
fn reserve<'a>(namespace: &str, marks: impl Iterator<Item = &'a str>, names: &mut BTreeSet<String>) {
    names.extend(
        marks
            .filter_map(owner_in)
            .filter(|(ns, _)| *ns == namespace)
            .map(|(_, n)| n.to_string()),
    );
}

/// The cluster's vzdump jobs not yet managed, as BackupPolicies adopting
/// them; the exported guests they back up get the policy's member label.
async fn export_jobs(
    a: &ExportArgs,
    cluster: &str,
    client: &PveClient,
    guests: &mut [Written],
    skipped: &mut Vec<String>,
) -> anyhow::Result<Vec<Policy>> {
    let jobs = client
        .backup_jobs()
        .await
        .with_context(|| format!("cluster {cluster}: listing backup jobs"))?;
    let by_vmid: BTreeMap<u32, String> = guests.iter().map(|w| (w.vmid, w.name.clone())).collect();
    let mut names = BTreeSet::new();
    reserve(&a.namespace, jobs.iter().filter_map(|j| j.comment.as_deref()), &mut names);
    let mut out = vec![];
    for (n, job) in jobs.iter().filter(|j| !j.comment.as_deref().is_some_and(has_mark)).enumerate() {
        let words = job.comment.as_deref().filter(|c| !c.trim().is_empty()).unwrap_or(&job.id);
        let name = unique(&dns_label(words, &job.id), (n + 1).to_string(), &mut names);
        let exported = match backup_exported::spec_of(cluster, &name, job, &by_vmid) {
            Ok(e) => e,
            Err(why) => {
                skipped.push(format!("cluster {cluster}: {why}"));
                continue;
            }
        };
        for w in guests.iter_mut().filter(|w| exported.labelled.contains(&w.vmid)) {
            w.labels.insert(backup_exported::member_label(&name), "true".into());
        }
        let file = a.out.join(cluster).join("backups").join(format!("{name}.yaml"));
        if !a.dry_run {
            let mut p = crate::api::BackupPolicy::new(&name, exported.spec.clone());
            p.metadata.namespace = Some(a.namespace.clone());
            let kept = "Kept on the job as it is, not expressed in this spec";
            write_manifest(
                &file,
                &with_header(kept, &exported.unexpressed, &[], &serde_yaml_ng::to_string(&p)?),
            )?;
        }
        out.push(Policy {
            file,
            name,
            job: job.id.clone(),
            exported,
        });
    }
    Ok(out)
}

/// The records exported, and what was not (with why).
#[derive(Default)]
struct Records {
    files: Vec<PathBuf>,
    skipped: Vec<String>,
    failed: Vec<String>,
}

/// The RRsets of every `--zone`, except those the operator already marks and the zone's own SOA/NS.
async fn export_records(a: &ExportArgs, engine: &Engine) -> anyhow::Result<Records> {
    use crate::{
        providers::dns::DnsApi,
        reconcile::{dns_record::exported, ownership::is_mark_line},
    };
    let mut out = Records::default();
    let mut names = BTreeSet::new();
    for z in &a.zone {
        let (only, zone) = z.split_once('/').map_or((None, z.as_str()), |(p, z)| (Some(p), z));
        for (provider, client) in engine.providers.dns.iter().filter(|(p, _)| only.is_none_or(|o| o == p.as_str())) {
            let sets = match client.list(zone).await {
                Ok(s) => s,
                Err(e) => {
                    out.failed.push(format!("dns {provider}: zone {zone}: {e}"));
                    continue;
                }
            };
            reserve(&a.namespace, sets.iter().filter_map(|s| s.mark.as_deref()), &mut names);
            for set in sets.iter().filter(|s| !s.mark.as_deref().is_some_and(is_mark_line)) {
                let spec = match exported::spec_of(provider, zone, set) {
                    Ok(spec) => spec,
                    Err(why) => {
                        out.skipped.push(why);
                        continue;
                    }
                };
                let label = dns_label(
                    &format!("{}-{}", spec.name.replace('@', "apex"), spec.record_type.as_str()),
                    "record",
                );
                let name = unique(&label, zone.replace('.', "-"), &mut names);
                let mut record = crate::api::DnsRecord::new(&name, spec);
                record.metadata.namespace = Some(a.namespace.clone());
                let file = a.out.join(provider).join("dns").join(zone).join(format!("{name}.yaml"));
                if !a.dry_run {
                    write_manifest(&file, &serde_yaml_ng::to_string(&record)?)?;
                }
                out.files.push(file);
            }
        }
    }
    Ok(out)
}

/// Every proxy host of every `proxy:` endpoint (none with `--cluster`, `--vmid`… filters: those select guests).
async fn export_proxy_hosts(a: &ExportArgs, engine: &Engine) -> anyhow::Result<Vec<PathBuf>> {
    if a.filters_guests() || a.cluster.is_some() {
        return Ok(vec![]);
    }
    let mut names = BTreeSet::new();
    let mut written = vec![];
    for (provider, client) in &engine.providers.proxy {
        let hosts = client
            .list()
            .await
            .with_context(|| format!("proxy {provider}: listing proxy hosts"))?;
        reserve(&a.namespace, hosts.iter().filter_map(|h| h.mark()), &mut names);
        for h in hosts.iter().filter(|h| h.mark().is_none()) {
            let spec = crate::reconcile::proxy_host::exported::spec_of(provider, h);
            let first = spec.domains.first().cloned().unwrap_or_else(|| format!("host-{}", h.id));
            let name = unique(&dns_label(&first, &format!("host-{}", h.id)), h.id.to_string(), &mut names);
            let mut host = crate::api::ProxyHost::new(&name, spec);
            host.metadata.namespace = Some(a.namespace.clone());
            let file = a.out.join(provider).join("proxy-hosts").join(format!("{name}.yaml"));
            if !a.dry_run {
                write_manifest(&file, &serde_yaml_ng::to_string(&host)?)?;
            }
            written.push(file);
        }
    }
    Ok(written)
}

/// Guests read at once (each costs three reads: config, firewall options and rules).
const EXPORT_CONCURRENCY: usize = 8;

async fn export_guest(a: &ExportArgs, cluster: &str, client: &PveClient, r: &ClusterResource, name: String) -> anyhow::Result<Written> {
    let guest_type = if r.kind == "lxc" { GuestType::Lxc } else { GuestType::Qemu };
    let g = observed_from(r, guest_type);
    let what = || format!("cluster {cluster}: guest {}", r.vmid);
    let config = read_config(client, &g).await.with_context(what)?;
    let firewall = read_firewall(client, &g).await.ok();
    let facts = GuestFacts {
        cluster,
        vmid: g.vmid,
        node: &g.node,
        guest_type,
        running: g.running,
        pool: r.pool.clone(),
        config: &config,
        firewall: firewall.as_ref(),
        password_secret: format!("{name}-cloud-init"),
    };
    Ok(Written {
        file: a.out.join(cluster).join("guests").join(format!("{name}.yaml")),
        name,
        vmid: g.vmid,
        exported: spec_of(&facts),
        labels: BTreeMap::new(),
    })
}

/// A DNS-label name from the guest's name, unique among those exported (`-VMID` on a clash).
fn unique_name(r: &ClusterResource, taken: &mut BTreeSet<String>) -> String {
    let name = dns_label(r.name.as_deref().unwrap_or(""), &format!("guest-{}", r.vmid));
    unique(&name, r.vmid.to_string(), taken)
}

/// `text` as a Kubernetes name (lower case, `-` for anything else), or `fallback`.
fn dns_label(text: &str, fallback: &str) -> String {
    let name: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // One `-` for a run of others ("weekly, all" → "weekly-all").
    let name = name.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    let name: String = name.chars().take(50).collect();
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() { fallback.to_string() } else { name }
}

/// `name`, or `name-suffix` when it is taken.
fn unique(name: &str, suffix: String, taken: &mut BTreeSet<String>) -> String {
    let name = if taken.contains(name) {
        format!("{name}-{suffix}")
    } else {
        name.to_string()
    };
    taken.insert(name.clone());
    name
}

/// A guest's manifest, with its member labels.
fn guest_manifest(namespace: &str, w: &Written) -> anyhow::Result<String> {
    let mut g = ProxmoxGuest::new(&w.name, w.exported.spec.clone());
    g.metadata.namespace = Some(namespace.to_string());
    g.metadata.labels = Some(w.labels.clone()).filter(|l| !l.is_empty());
    let kept = "Kept on the guest as it is, not expressed in this spec";
    Ok(with_header(
        kept,
        &w.exported.unexpressed,
        &w.exported.secrets,
        &serde_yaml_ng::to_string(&g)?,
    ))
}

/// What the spec cannot say first, as comments a reader sees before the spec.
fn with_header(kept: &str, unexpressed: &[String], secrets: &[String], yaml: &str) -> String {
    let mut text = String::new();
    if !unexpressed.is_empty() {
        text.push_str(&format!("# Exported by homelab-operator. {kept}:\n"));
        for u in unexpressed {
            text.push_str(&format!("#   {u}\n"));
        }
    }
    for s in secrets {
        text.push_str(&format!("# Create the Secret {s} before applying.\n"));
    }
    text.push_str(yaml);
    text
}

fn write_manifest(file: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}

fn summary(a: &ExportArgs, written: &[Written], policies: &[Policy], hosts: &[PathBuf], records: &Records) {
    let verb = if a.dry_run { "would write" } else { "wrote" };
    for w in written {
        println!(
            "ProxmoxGuest {}/{} (VMID {}): {verb} {}",
            a.namespace,
            w.name,
            w.vmid,
            w.file.display()
        );
        for u in &w.exported.unexpressed {
            println!("  not expressed, kept as it is: {u}");
        }
        for s in &w.exported.secrets {
            println!("  create the Secret {}/{s}", a.namespace);
        }
    }
    for p in policies {
        println!(
            "BackupPolicy {}/{} (job {}): {verb} {}",
            a.namespace,
            p.name,
            p.job,
            p.file.display()
        );
        if !p.exported.labelled.is_empty() {
            let label = crate::reconcile::backup_policy::exported::member_label(&p.name);
            println!("  members by label {label}: VMIDs {:?}", p.exported.labelled);
        }
        for u in &p.exported.unexpressed {
            println!("  not expressed, kept as it is: {u}");
        }
    }
    for h in hosts {
        println!("ProxyHost: {verb} {}", h.display());
    }
    for r in &records.files {
        println!("DnsRecord: {verb} {}", r.display());
    }
    for s in &records.skipped {
        println!("not exported: {s}");
    }
    for f in &records.failed {
        println!("error: {f}");
    }
    let unexpressed: usize = written.iter().map(|w| w.exported.unexpressed.len()).sum::<usize>()
        + policies.iter().map(|p| p.exported.unexpressed.len()).sum::<usize>();
    let secrets: usize = written.iter().map(|w| w.exported.secrets.len()).sum();
    println!(
        "\nExport: {} guests, {} backup jobs, {} proxy hosts, {} DNS records, {unexpressed} settings kept as they are but not expressed, {secrets} Secrets to create{}.",
        written.len(),
        policies.len(),
        hosts.len(),
        records.files.len(),
        if a.dry_run { " (dry run: nothing written)" } else { "" }
    );
}
