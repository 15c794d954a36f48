//! `homelab-operator demo`: the whole loop on the built-in simulators.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use super::{DemoArgs, backups, oneshot, resources};
use crate::{
    config::Config,
    metrics::Metrics,
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

    println!("== starting the Proxmox VE simulator (HTTPS on loopback, self-signed certificate)");
    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration: Duration::from_millis(a.task_ms),
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
        task_duration: Duration::from_millis(a.task_ms),
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
    println!("== starting the Nginx Proxy Manager simulator");
    let npm_secret = format!("{:032x}", rand::random::<u128>());
    let npm_sim = crate::sim::npm::NpmSim::new("admin@example.com", &npm_secret).map_err(anyhow::Error::msg)?;
    let npm_server = npm_sim.serve().await.context("starting the NPM simulator")?;
    std::fs::write(dir.path().join("npm-secret"), &npm_secret)?;
    let proxy = crate::config::ProxyEndpoint {
        url: url::Url::parse(&npm_server.url)?,
        identity: "admin@example.com".into(),
        secret: crate::config::SecretSource::File(dir.path().join("npm-secret")),
        timeout: Duration::from_secs(5),
    };
    println!("   {}", npm_server.url);
    let config = Config {
        path: "(demo)".into(),
        proxmox: [("default".to_string(), ep)].into(),
        dns: [("default".to_string(), dns)].into(),
        proxy: [("default".to_string(), proxy)].into(),
        pbs: [("main".to_string(), pbs_ep)].into(),
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::default());
    let engine = oneshot::Engine::new(&config, metrics.clone())?;

    println!("== applying {} resources from {}", loaded.guests.len(), examples.display());
    let progress = |line: &str| println!("   {line}");
    let results = oneshot::apply_all(&engine, &loaded.guests, 4, Duration::from_secs(120), &progress).await;
    let addresses = oneshot::guest_addresses(results.iter().map(|r| (r.name.clone(), &r.status)));
    let mut records = vec![];
    for r in &oneshot::all_records(&loaded.guests, &loaded.records) {
        records.push(oneshot::apply_record(&engine, r, &addresses, &progress).await);
    }
    println!("\n{}\n", oneshot::status_table(&results));
    println!("{}\n", oneshot::record_table(&records));
    let mut proxies = vec![];
    for p in &oneshot::all_proxies(&loaded.guests, &loaded.proxies) {
        proxies.push(oneshot::apply_proxy(&engine, p, &addresses, &progress).await);
    }
    if !proxies.is_empty() {
        println!("{}\n", oneshot::proxy_table(&proxies));
    }
    let statuses: Vec<crate::api::ProxmoxGuestStatus> = results.iter().map(|r| r.status.clone()).collect();
    let applied = backups::applied_guests(&loaded.guests, &statuses);
    let mut backups_ok = true;
    for p in &loaded.policies {
        backups_ok &= demo_backups(&engine, p, &applied, &pbs, &progress).await;
    }
    let web01 = sim
        .guests()
        .into_iter()
        .find(|g| g.get("name").as_deref() == Some("web01"))
        .map(|g| g.vmid);
    let monitors_ok = match web01 {
        Some(vmid) => super::demo_monitors::run(sim.clone(), vmid, dir.path()).await?,
        None => false,
    };
    let calls = metrics.outside_call_total("pve");

    println!("== planning again: a converged homelab needs no writes");
    let mut clean = true;
    for g in &loaded.guests {
        let p = oneshot::plan_one(&engine, g).await?;
        println!(
            "   {}: {}",
            oneshot::display_name(g),
            if p.is_noop() {
                "no changes".to_string()
            } else {
                format!("{} pending", p.actions.len() + p.pending.len())
            }
        );
        clean &= p.is_noop();
    }
    for r in &oneshot::all_records(&loaded.guests, &loaded.records) {
        let out = oneshot::plan_record(&engine, r, &addresses).await?;
        let noop = out.plan.actions.is_empty() && out.plan.blocked.is_none();
        println!(
            "   {}: {}",
            oneshot::record_name(r),
            if noop { "no changes" } else { "changes pending" }
        );
        clean &= noop;
    }
    for p in &oneshot::all_proxies(&loaded.guests, &loaded.proxies) {
        let out = oneshot::plan_proxy(&engine, p, &addresses).await?;
        let noop = out.plan.actions.is_empty() && out.plan.blocked.is_none();
        println!(
            "   {}: {}",
            oneshot::proxy_name(p),
            if noop { "no changes" } else { "changes pending" }
        );
        clean &= noop;
    }
    for p in &loaded.policies {
        let out = backups::run(&engine, p, &applied, true).await;
        let noop = out
            .as_ref()
            .is_ok_and(|o| backups::job_change(&o.job).is_none() && o.pbs_steps.is_empty());
        println!(
            "   {}: {}",
            backups::policy_name(p),
            if noop { "no changes" } else { "changes pending" }
        );
        clean &= noop;
    }
    println!("\n{calls} Proxmox API calls to converge; simulator guests: {}", sim.guests().len());
    let ok = results.iter().all(|r| r.error.is_none())
        && records.iter().all(|r| r.error.is_none())
        && proxies.iter().all(|r| r.error.is_none())
        && backups_ok
        && monitors_ok
        && clean;
    Ok(if ok { 0 } else { 1 })
}

/// A policy in the demo: "back up now", the PBS verifies, a restore test;
/// per-guest freshness and the restore result. True when all went well.
async fn demo_backups(
    engine: &oneshot::Engine,
    policy: &crate::api::BackupPolicy,
    guests: &[crate::api::ProxmoxGuest],
    pbs: &PbsSim,
    progress: &(dyn Fn(&str) + Sync),
) -> bool {
    let annotate = |p: &mut crate::api::BackupPolicy, key: &str| {
        p.metadata
            .annotations
            .get_or_insert_default()
            .insert(key.to_string(), "demo".to_string());
    };
    let mut p = policy.clone();
    println!(
        "\n== {}: back up now (kubectl annotate bkp {} homelab.dev/backup-now=demo)",
        backups::policy_name(&p),
        p.metadata.name.as_deref().unwrap_or("")
    );
    annotate(&mut p, crate::api::BACKUP_NOW_ANNOTATION);
    let r = backups::apply(engine, &p, guests, Duration::from_secs(120), progress).await;
    let Ok(out) = &r.outcome else {
        println!("   error: {}", r.outcome.err().map(|e| e.to_string()).unwrap_or_default());
        return false;
    };
    for job in out.status.pbs_jobs.iter().filter(|j| j.kind == "verify") {
        println!("   the PBS runs verify job {} now", job.id);
        let _ = pbs.run_job("verify", &job.id);
        pbs.finish_tasks();
    }
    println!("== {}: restore test (homelab.dev/restore-test-now=demo)", r.name);
    p.status = Some(out.status.clone());
    annotate(&mut p, crate::api::RESTORE_TEST_NOW_ANNOTATION);
    let r = backups::apply(engine, &p, guests, Duration::from_secs(120), progress).await;
    println!("\n{}\n", backups::table(std::slice::from_ref(&r)));
    println!("{}\n", backups::members_table(&r));
    let Ok(out) = &r.outcome else { return false };
    let t = out.status.last_restore_test.as_ref();
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
    t.is_some_and(|t| t.result.as_deref() == Some("OK")) && out.status.members.iter().all(|m| m.fresh)
}
