//! Command-line commands, each a thin function over the library.

pub mod backups;
pub mod demo;
mod demo_monitors;
pub mod monitors;
pub mod oneshot;
pub mod resources;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::{api, config::Config, metrics::Metrics};
pub use crate::{
    config::ConfigArg,
    controller::{DEFAULT_CONCURRENCY, RunArgs},
};

#[derive(Parser, Debug)]
#[command(
    name = "homelab-operator",
    version,
    about = "Run a Proxmox homelab from declared state",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (also RUST_LOG), e.g. `info,homelab_operator=debug`.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster in KUBECONFIG or the in-cluster config.
    Run(RunArgs),
    /// Print every CRD as multi-document YAML (what crds/ holds).
    Crds(CrdsArgs),
    /// Show what would change for resources in YAML files, read-only.
    /// Exit 0: nothing to do; 2: changes pending; 1: error.
    Plan(FilesArgs),
    /// Reconcile resources from YAML files once, without a cluster.
    Apply(FilesArgs),
    /// Start the built-in simulators on loopback, apply manifests/examples, print the result.
    Demo(DemoArgs),
    /// Send a test message to a notification channel of the config.
    /// Exit 0 when it was delivered, 1 otherwise.
    NotifyTest(NotifyTestArgs),
}

#[derive(Args, Debug)]
pub struct NotifyTestArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Channel name in the config's `notifications:` section.
    pub channel: String,
}

#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Resource files or directories (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Give up on a resource after this many seconds (apply).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Resources worked on at once (apply), as `run --concurrency`.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// Output of `plan`: `text` (for people, like `terraform plan`) or `json` (for bots).
    #[arg(long, value_enum, default_value = "text")]
    pub output: PlanOutput,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PlanOutput {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory of example resources.
    #[arg(long)]
    pub examples: Option<PathBuf>,
    /// Simulated task duration in milliseconds.
    #[arg(long, default_value_t = 400)]
    pub task_ms: u64,
}

pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exit codes: 0 ok, 1 error, 2 changes pending (plan).
pub async fn main(cli: Cli) -> anyhow::Result<i32> {
    init_tracing(&cli.log);
    match cli.command {
        Command::Crds(a) => crds(a).map(|_| 0),
        Command::Plan(a) => plan(a).await,
        Command::Apply(a) => apply(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::NotifyTest(a) => notify_test(a).await,
        Command::Run(a) => {
            let config = Config::load(&a.config.config)?;
            crate::controller::run(config, a).await.map(|_| 0)
        }
    }
}

fn crds(a: CrdsArgs) -> anyhow::Result<()> {
    let crds = api::all_crds();
    match a.dir {
        None => {
            for crd in &crds {
                print!("{}", api::crd_yaml(crd));
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                std::fs::write(dir.join(api::crd_file_name(crd)), api::crd_yaml(crd))?;
            }
        }
    }
    Ok(())
}

/// One resource's part of a plan, as printed and as `--output json` gives it.
#[derive(serde::Serialize, Default)]
struct PlanEntry {
    kind: &'static str,
    name: String,
    /// `create`, `update`, `reboot`, `delete`, `pending`, `blocked` or `waiting`, with what.
    changes: Vec<PlanChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(serde::Serialize)]
struct PlanChange {
    op: &'static str,
    #[serde(skip)]
    symbol: char,
    what: String,
}

impl PlanChange {
    fn new(symbol: char, what: impl Into<String>) -> Self {
        let op = match symbol {
            '+' => "create",
            '-' => "delete",
            '!' => "reboot",
            '~' => "update",
            '?' => "pending",
            'x' => "blocked",
            _ => "waiting",
        };
        Self {
            op,
            symbol,
            what: what.into(),
        }
    }
}

fn guest_entry(name: String, result: Result<crate::reconcile::proxmox_guest::Plan, crate::reconcile::ReconcileError>) -> PlanEntry {
    let mut e = PlanEntry {
        kind: "ProxmoxGuest",
        name,
        ..Default::default()
    };
    match result {
        Ok(p) => {
            if let Some(b) = &p.blocked {
                e.changes.push(PlanChange::new('x', format!("{}: {}", b.reason, b.message)));
            }
            e.changes
                .extend(p.actions.iter().map(|a| PlanChange::new(a.symbol(), a.to_string())));
            e.changes.extend(p.pending.iter().map(|c| {
                let to = c.desired.as_ref().map_or(String::new(), |d| format!(" → {d}"));
                PlanChange::new('?', format!("{} ({:?}){to}", c.field, c.class))
            }));
        }
        Err(err) => e.error = Some(err.to_string()),
    }
    e
}

/// A record or proxy whose plan writes nothing may still not be Ready (its target is missing).
fn waiting(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Option<PlanChange> {
    api::find_condition(conditions, api::CONDITION_READY)
        .filter(|c| c.status == "False")
        .map(|c| PlanChange::new('.', format!("{}: {}", c.reason, c.message)))
}

async fn plan(a: FilesArgs) -> anyhow::Result<i32> {
    use crate::reconcile::{dns_record::plan::DnsAction, proxy_host::plan::ProxyAction};
    let config = Config::load(&a.config.config)?;
    let loaded = resources::load(&a.files)?;
    let engine = oneshot::Engine::new(&config, Arc::new(Metrics::default()))?;
    let mut entries = vec![];
    for g in &loaded.guests {
        entries.push(guest_entry(oneshot::display_name(g), oneshot::plan_one(&engine, g).await));
    }
    // Records that target a guest use the addresses its status in the files reports.
    let addresses = oneshot::guest_addresses(
        loaded
            .guests
            .iter()
            .filter_map(|g| g.status.as_ref().map(|s| (oneshot::display_name(g), s))),
    );
    for r in &oneshot::all_records(&loaded.guests, &loaded.records) {
        let mut e = PlanEntry {
            kind: "DnsRecord",
            name: oneshot::record_name(r),
            ..Default::default()
        };
        match oneshot::plan_record(&engine, r, &addresses).await {
            Ok(out) => {
                if let Some(crate::reconcile::Blocked { reason, message }) = &out.plan.blocked {
                    e.changes.push(PlanChange::new('x', format!("{reason}: {message}")));
                }
                for act in &out.plan.actions {
                    if let DnsAction::Put { set, why } = act {
                        let what = format!("{why}: {} {} {} (TTL {})", set.name, set.rtype, set.values.join(", "), set.ttl);
                        let symbol = if out.status.values.is_empty() { '+' } else { '~' };
                        e.changes.push(PlanChange::new(symbol, what));
                    }
                }
                if e.changes.is_empty() {
                    e.changes.extend(waiting(&out.status.conditions));
                }
            }
            Err(err) => e.error = Some(err.to_string()),
        }
        entries.push(e);
    }
    for p in &oneshot::all_proxies(&loaded.guests, &loaded.proxies) {
        let mut e = PlanEntry {
            kind: "ProxyHost",
            name: oneshot::proxy_name(p),
            ..Default::default()
        };
        match oneshot::plan_proxy(&engine, p, &addresses).await {
            Ok(out) => {
                if let Some(crate::reconcile::Blocked { reason, message }) = &out.plan.blocked {
                    e.changes.push(PlanChange::new('x', format!("{reason}: {message}")));
                }
                for act in &out.plan.actions {
                    let (symbol, h, why) = match act {
                        ProxyAction::Create(h) => ('+', h, "create proxy host".to_string()),
                        ProxyAction::Update { id, spec, why } => ('~', spec, format!("{why}: proxy host {id}")),
                    };
                    let what = format!(
                        "{why} {} → {}://{}:{}",
                        h.domain_names.join(", "),
                        h.forward_scheme,
                        h.forward_host,
                        h.forward_port
                    );
                    e.changes.push(PlanChange::new(symbol, what));
                }
                if e.changes.is_empty() {
                    e.changes.extend(waiting(&out.status.conditions));
                }
            }
            Err(err) => e.error = Some(err.to_string()),
        }
        entries.push(e);
    }
    for p in &loaded.policies {
        entries.push(policy_entry(&engine, p, &loaded.guests).await);
    }
    let planned_guests: oneshot::GuestAddresses = loaded
        .guests
        .iter()
        .filter_map(|g| Some((oneshot::display_name(g), g.status.clone()?)))
        .collect();
    for m in &oneshot::all_monitors(&loaded.guests, &loaded.monitors) {
        let mut e = PlanEntry {
            kind: "MonitorTarget",
            name: monitors::monitor_name(m),
            ..Default::default()
        };
        match monitors::build(m, &planned_guests, &loaded.proxies) {
            Ok(c) => e.changes.push(PlanChange::new(
                '+',
                format!(
                    "{} check of {} every {}s (the controller runs it; apply runs it once)",
                    c.check_type,
                    c.target,
                    c.interval.as_secs()
                ),
            )),
            Err(err) => e.changes.push(PlanChange::new('.', format!("not checkable here: {err}"))),
        }
        entries.push(e);
    }
    for s in &loaded.skipped {
        eprintln!("skipped (kind not handled yet): {s}");
    }
    match a.output {
        PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        PlanOutput::Text => {
            print_plan(&entries);
            let clusters: std::collections::BTreeSet<&str> = loaded.policies.iter().map(|p| p.spec.cluster.as_str()).collect();
            for c in clusters {
                if let Some(line) = backups::unprotected_line(&engine, c).await {
                    println!("{line}");
                }
            }
        }
    }
    let failed = entries.iter().any(|e| e.error.is_some());
    let pending = entries.iter().any(|e| !e.changes.is_empty());
    Ok(if failed {
        1
    } else if pending {
        2
    } else {
        0
    })
}

/// A policy's plan: its job's change and, when nothing changes, why it is not Ready.
async fn policy_entry(engine: &oneshot::Engine, p: &api::BackupPolicy, guests: &[api::ProxmoxGuest]) -> PlanEntry {
    let mut e = PlanEntry {
        kind: "BackupPolicy",
        name: backups::policy_name(p),
        ..Default::default()
    };
    match backups::run(engine, p, guests, true).await {
        Ok(out) => {
            if let Some((symbol, what)) = backups::job_change(&out.job) {
                e.changes.push(PlanChange::new(symbol, what));
            }
            for step in &out.pbs_steps {
                e.changes
                    .push(PlanChange::new(backups::pbs_symbol(step), format!("PBS: {}", step.describe())));
            }
            if e.changes.is_empty() {
                e.changes.extend(waiting(&out.status.conditions));
            }
        }
        Err(err) => e.error = Some(err.to_string()),
    }
    e
}

fn print_plan(entries: &[PlanEntry]) {
    for e in entries {
        match (&e.error, e.changes.is_empty()) {
            (Some(err), _) => println!("{} {}: error: {err}", e.kind, e.name),
            (None, true) => println!("{} {}: no changes", e.kind, e.name),
            (None, false) => {
                println!("{} {}:", e.kind, e.name);
                for c in &e.changes {
                    println!("  {} {}", c.symbol, c.what);
                }
            }
        }
    }
    let count = |op: &str| entries.iter().flat_map(|e| &e.changes).filter(|c| c.op == op).count();
    println!(
        "\nPlan: {} to create, {} to update, {} reboots, {} to delete, {} pending, {} blocked.",
        count("create"),
        count("update"),
        count("reboot"),
        count("delete"),
        count("pending"),
        count("blocked")
    );
}

async fn apply(a: FilesArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.config.config)?;
    let loaded = resources::load(&a.files)?;
    let engine = oneshot::Engine::new(&config, Arc::new(Metrics::default()))?;
    let progress = |line: &str| println!("{line}");
    let results = oneshot::apply_all(
        &engine,
        &loaded.guests,
        a.concurrency.into(),
        Duration::from_secs(a.timeout),
        &progress,
    )
    .await;
    // Records after guests, so records that target a guest see its addresses.
    let addresses = oneshot::guest_addresses(results.iter().map(|r| (r.name.clone(), &r.status)));
    let mut records = vec![];
    for r in &oneshot::all_records(&loaded.guests, &loaded.records) {
        records.push(oneshot::apply_record(&engine, r, &addresses, &progress).await);
    }
    if !results.is_empty() {
        println!("\n{}", oneshot::status_table(&results));
    }
    if !records.is_empty() {
        println!("\n{}", oneshot::record_table(&records));
    }
    let mut proxies = vec![];
    for p in &oneshot::all_proxies(&loaded.guests, &loaded.proxies) {
        proxies.push(oneshot::apply_proxy(&engine, p, &addresses, &progress).await);
    }
    if !proxies.is_empty() {
        println!("\n{}", oneshot::proxy_table(&proxies));
    }
    // Policies last: their members are the guests just applied, with their VMIDs.
    let statuses: Vec<api::ProxmoxGuestStatus> = results.iter().map(|r| r.status.clone()).collect();
    let applied = backups::applied_guests(&loaded.guests, &statuses);
    let mut policies = vec![];
    for p in &loaded.policies {
        policies.push(backups::apply(&engine, p, &applied, Duration::from_secs(a.timeout), &progress).await);
    }
    if !policies.is_empty() {
        println!("\n{}", backups::table(&policies));
    }
    let mut checked = vec![];
    for m in &oneshot::all_monitors(&loaded.guests, &loaded.monitors) {
        checked.push(monitors::check(m, &addresses, &loaded.proxies).await);
    }
    if !checked.is_empty() {
        println!("\n{}", monitors::table(&checked));
    }
    for s in &loaded.skipped {
        eprintln!("skipped (kind not handled yet): {s}");
    }
    let failed = results.iter().any(|r| r.error.is_some())
        || records.iter().any(|r| r.error.is_some())
        || proxies.iter().any(|r| r.error.is_some())
        || policies.iter().any(|p| p.outcome.is_err());
    Ok(if failed { 1 } else { 0 })
}

async fn notify_test(a: NotifyTestArgs) -> anyhow::Result<i32> {
    use crate::notify::{Event, Message, Notifier};
    let config = Config::load(&a.config.config)?;
    let notifier = Notifier::new(config.notifications, None).map_err(anyhow::Error::msg)?;
    let msg = Message::new(
        Event::Test,
        "homelab-operator notify-test",
        format!("a test message to channel {:?}", a.channel),
    );
    let out = notifier.send(&a.channel, &msg).await?;
    match &out.error {
        None => println!(
            "{}: sent ({} attempt{})",
            a.channel,
            out.attempts,
            if out.attempts == 1 { "" } else { "s" }
        ),
        Some(e) => println!("{}: not sent after {} attempts: {e}", a.channel, out.attempts),
    }
    Ok(if out.error.is_none() { 0 } else { 1 })
}
