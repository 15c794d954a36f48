//! `homelab-operator demo`: the whole loop on the built-in simulators.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use super::{
    DemoArgs,
    apply::apply_each,
    backups,
    oneshot::{Engine, Files, table},
    resources,
};
use crate::{
    api::{BackupPolicy, DnsRecord, ProxmoxGuest, ProxyHost},
    config::Config,
    metrics::Metrics,
    reconcile::kind::{Kind, display_name},
    sim::{
        pbs::{PbsSim, PbsSimConfig},
        pve::{PveSim, PveSimConfig, endpoint_for},
    },
};

pub async fn run(a: DemoArgs) -> anyhow::Result<i32> {
    let examples = a.examples.unwrap_or_else(|| {
        let local = std::path::PathBuf::from("manifests/examples");
        if local.is_dir() {
            local
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples")
        }
    });
    let loaded = resources::load(std::slice::from_ref(&examples))?;
    anyhow::ensure!(!loaded.guests.is_empty(), "no ProxmoxGuest in {}", examples.display());

    let world = start_simulators(a.task_ms).await?;
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::new(&world.config, metrics.clone())?;
    println!("== applying {} resources from {}", loaded.guests.len(), examples.display());
    let progress = |line: &str| println!("   {line}");
    let files = loaded.files();
    let applied = apply_examples(&engine, &loaded, &files, &progress).await;
    let mut backups_ok = true;
    for p in &loaded.policies {
        backups_ok &= demo_backups(&engine, p, &files, &world.pbs, &progress).await;
    }
    let sim = &world.sim;
    let web01 = sim
        .guests()
        .into_iter()
        .find(|g| g.get("name").as_deref() == Some("web01"))
        .map(|g| g.vmid);
    let monitors_ok = match web01 {
        Some(vmid) => super::demo_monitors::run(sim.clone(), vmid, world.dir.path()).await?,
        None => false,
    };
    let updates_ok = super::demo_updates::run(&engine, &loaded, &files, sim, &world.chat).await?;
    let calls = metrics.outside_call_total("pve");
    println!("== planning again: a converged homelab needs no writes");
    let clean = plan_again(&engine, &loaded, &files).await?;
    println!("\n{calls} Proxmox API calls to converge; simulator guests: {}", sim.guests().len());
    let ok = applied && backups_ok && monitors_ok && updates_ok && clean;
    if let Some(dir) = a.serve.as_deref().filter(|_| ok) {
        serve(&world, dir).await?;
    }
    Ok(if ok { 0 } else { 1 })
}

/// Add the hand-made homelab, write the config that reaches the simulators
/// (written last, so its presence means ready), serve until interrupted.
async fn serve(world: &World, dir: &std::path::Path) -> anyhow::Result<()> {
    crate::sim::homelab::seed(&world.sim, &world.npm, &world.dns).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("config.yaml");
    let partial = dir.join(".config.yaml.partial");
    std::fs::write(&partial, &world.config_yaml)?;
    std::fs::rename(&partial, &file)?;
    println!(
        "\n== a homelab made by hand sits beside the operator's: VMIDs {:?}, backup job \"Nightly, made by hand\", ha.home.arpa on the proxy and in DNS",
        crate::sim::homelab::VMIDS
    );
    println!("   {} reaches the simulators; serving until interrupted (Ctrl-C)", file.display());
    wait_for_signal().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

/// The simulators on loopback and the config that reaches them.
struct World {
    sim: Arc<PveSim>,
    pbs: Arc<PbsSim>,
    npm: Arc<crate::sim::npm::NpmSim>,
    dns: Arc<crate::sim::technitium::TechnitiumSim>,
    /// The `phone` channel: a simulated Telegram.
    chat: Arc<crate::sim::notify::NotifySim>,
    config: Config,
    /// The same endpoints as a config file.
    config_yaml: String,
    dir: tempfile::TempDir,
    /// Serving until the demo ends.
    _servers: Vec<crate::sim::server::SimServer>,
}

async fn start_simulators(task_ms: u64) -> anyhow::Result<World> {
    println!("== starting the Proxmox VE simulator (HTTPS on loopback, self-signed certificate)");
    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration: Duration::from_millis(task_ms),
        ..Default::default()
    })
    .map_err(|e| {
        anyhow::anyhow!("{e}\nthe simulator checks requests against tests/data/pve-api-subset.json; run the demo from a source checkout")
    })?;
    let server = sim.serve().await.context("starting the simulator")?;
    let dir = tempfile::Builder::new().prefix("homelab-demo").tempdir()?;
    let ep = endpoint_for("default", &sim, &server, dir.path())?;
    println!(
        "   {} (certificate pinned by SHA-256 fingerprint, token read from {})",
        server.url,
        dir.path().join("pve-token-default").display()
    );
    println!("== starting the Proxmox Backup Server simulator (datastore store1 behind PVE storage pbs1)");
    let pbs = PbsSim::new(PbsSimConfig {
        task_duration: Duration::from_millis(task_ms),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    sim.attach_pbs("pbs1", pbs.clone(), "store1");
    let pbs_server = pbs.serve().await.context("starting the PBS simulator")?;
    let pbs_ep = crate::sim::pbs::endpoint_for("main", &pbs, &pbs_server, dir.path())?;
    println!("   {} (token id and secret joined with ':', certificate pinned)", pbs_server.url);
    println!("== starting the Technitium DNS simulator (zone home.arpa)");
    let token = format!("{:064x}", rand::random::<u128>());
    let dns_sim = crate::sim::technitium::TechnitiumSim::new(&token, &["home.arpa"]).map_err(anyhow::Error::msg)?;
    let dns_server = dns_sim.serve().await.context("starting the DNS simulator")?;
    std::fs::write(dir.path().join("dns-token"), &token)?;
    let dns = crate::config::DnsEndpoint::Technitium {
        url: url::Url::parse(&dns_server.url)?,
        token: crate::config::SecretSource::File(dir.path().join("dns-token")),
        timeout: Duration::from_secs(5),
    };
    println!("   {}", dns_server.url);
    let (npm_sim, npm_server, proxy) = npm(dir.path()).await?;
    let (chat, chat_server, phone) = phone_channel(dir.path()).await?;
    let config_yaml = format!(
        "{}{}dns:\n  default:\n    type: technitium\n    url: {}\n    tokenFile: {}\n\
         proxy:\n  default:\n    type: nginx-proxy-manager\n    url: {}\n    identity: admin@example.com\n    secretFile: {}\n",
        crate::sim::pve::config_section(&sim, &server, dir.path())?,
        crate::sim::pbs::config_section("main", &pbs, &pbs_server, dir.path())?,
        dns_server.url,
        dir.path().join("dns-token").display(),
        npm_server.url,
        dir.path().join("npm-secret").display(),
    );
    let config = Config {
        path: "(demo)".into(),
        proxmox: [("default".to_string(), ep)].into(),
        dns: [("default".to_string(), dns)].into(),
        proxy: [("default".to_string(), proxy)].into(),
        pbs: [("main".to_string(), pbs_ep)].into(),
        notifications: [("phone".to_string(), phone)].into(),
    };
    Ok(World {
        sim,
        pbs,
        npm: npm_sim,
        dns: dns_sim,
        chat,
        config,
        config_yaml,
        dir,
        _servers: vec![server, pbs_server, dns_server, npm_server, chat_server],
    })
}

/// The Nginx Proxy Manager simulator and the endpoint that reaches it.
async fn npm(
    dir: &std::path::Path,
) -> anyhow::Result<(
    Arc<crate::sim::npm::NpmSim>,
    crate::sim::server::SimServer,
    crate::config::ProxyEndpoint,
)> {
    println!("== starting the Nginx Proxy Manager simulator");
    let secret = format!("{:032x}", rand::random::<u128>());
    let sim = crate::sim::npm::NpmSim::new("admin@example.com", &secret).map_err(anyhow::Error::msg)?;
    let server = sim.serve().await.context("starting the NPM simulator")?;
    std::fs::write(dir.join("npm-secret"), &secret)?;
    let proxy = crate::config::ProxyEndpoint {
        url: url::Url::parse(&server.url)?,
        identity: "admin@example.com".into(),
        secret: crate::config::SecretSource::File(dir.join("npm-secret")),
        timeout: Duration::from_secs(5),
    };
    println!("   {}", server.url);
    Ok((sim, server, proxy))
}

/// The examples notify `phone`: a simulated Telegram.
async fn phone_channel(
    dir: &std::path::Path,
) -> anyhow::Result<(
    Arc<crate::sim::notify::NotifySim>,
    crate::sim::server::SimServer,
    crate::config::Channel,
)> {
    let chat = crate::sim::notify::NotifySim::new(Default::default());
    let server = chat.serve().await.context("starting the notification simulator")?;
    let mut channels = Config::parse("(demo)", &crate::sim::notify::config_section(&chat, &server, dir)?)?.notifications;
    let phone = channels.remove("telegram").context("the simulated Telegram channel")?;
    Ok((chat, server, phone))
}

/// Guests first, then what refers to them; a table per kind. True when nothing failed.
async fn apply_examples(engine: &Engine, loaded: &resources::Loaded, files: &Files, progress: &(dyn Fn(&str) + Sync)) -> bool {
    let deadline = Duration::from_secs(120);
    let guests = engine.apply_all(&loaded.guests, files, 4, deadline, progress).await;
    files.applied(&guests);
    let records = apply_each(engine, &loaded.records(), files, deadline, progress).await;
    println!("\n{}\n", table::<ProxmoxGuest>(&guests));
    println!("{}\n", table::<DnsRecord>(&records));
    let proxies = apply_each(engine, &loaded.proxies(), files, deadline, progress).await;
    if !proxies.is_empty() {
        println!("{}\n", table::<ProxyHost>(&proxies));
    }
    guests.iter().all(|r| r.error.is_none()) && records.iter().all(|r| r.error.is_none()) && proxies.iter().all(|r| r.error.is_none())
}

/// Plan every example again; true when none has anything to change.
async fn plan_again(engine: &Engine, loaded: &resources::Loaded, files: &Files) -> anyhow::Result<bool> {
    let mut clean = true;
    clean &= plan_clean(engine, &files.guests(), files).await?;
    clean &= plan_clean(engine, &loaded.records(), files).await?;
    clean &= plan_clean(engine, &loaded.proxies(), files).await?;
    clean &= plan_clean(engine, &loaded.policies, files).await?;
    clean &= plan_clean(engine, &loaded.updates, files).await?;
    Ok(clean)
}

async fn plan_clean<K: Kind>(engine: &Engine, objs: &[K], files: &Files) -> anyhow::Result<bool> {
    let mut clean = true;
    for o in objs {
        let mut changes = K::changes(&engine.plan(o, files).await?);
        // What a scheduled run will do is not a change to converge.
        changes.retain(crate::reconcile::Change::changes_anything);
        let what = match changes.len() {
            0 => "no changes".to_string(),
            n if K::KIND == "ProxmoxGuest" => format!("{n} pending"),
            _ => "changes pending".to_string(),
        };
        println!("   {}: {what}", display_name(o));
        clean &= changes.is_empty();
    }
    Ok(clean)
}

/// A policy in the demo: "back up now", the PBS verifies, a restore test;
/// per-guest freshness and the restore result. True when all went well.
async fn demo_backups(engine: &Engine, policy: &BackupPolicy, files: &Files, pbs: &PbsSim, progress: &(dyn Fn(&str) + Sync)) -> bool {
    let annotate = |p: &mut BackupPolicy, key: &str| {
        p.metadata
            .annotations
            .get_or_insert_default()
            .insert(key.to_string(), "demo".to_string());
    };
    let deadline = Duration::from_secs(120);
    let mut p = policy.clone();
    println!(
        "\n== {}: back up now (kubectl annotate bkp {} homelab.dev/backup-now=demo)",
        display_name(&p),
        p.metadata.name.as_deref().unwrap_or("")
    );
    annotate(&mut p, crate::api::BACKUP_NOW_ANNOTATION);
    let r = engine.apply(&p, files, deadline, progress).await;
    if let Some(e) = &r.error {
        println!("   error: {e}");
        return false;
    }
    for job in r.status.pbs_jobs.iter().filter(|j| j.kind == "verify") {
        println!("   the PBS runs verify job {} now", job.id);
        let _ = pbs.run_job("verify", &job.id);
        pbs.finish_tasks();
    }
    println!("== {}: restore test (homelab.dev/restore-test-now=demo)", r.name);
    p.status = Some(r.status);
    annotate(&mut p, crate::api::RESTORE_TEST_NOW_ANNOTATION);
    let r = engine.apply(&p, files, deadline, progress).await;
    println!("\n{}\n", table::<BackupPolicy>(std::slice::from_ref(&r)));
    println!("{}\n", backups::members_table(&r));
    if r.error.is_some() {
        return false;
    }
    let t = r.status.last_restore_test.as_ref();
    if let Some(t) = t {
        println!(
            "restore test: {} of {} to scratch VMID {} on {}: {} in {} s, scratch guest destroyed",
            t.backup,
            t.guest,
            t.scratch_vmid,
            t.node,
            t.result.as_deref().unwrap_or("?"),
            t.duration_seconds.unwrap_or(0)
        );
    }
    t.is_some_and(|t| t.result.as_deref() == Some("OK")) && r.status.members.iter().all(|m| m.fresh)
}
