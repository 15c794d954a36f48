//! `apply`: every resource of the files reconciled once until it settles,
//! guests first (records, proxy hosts, policies and monitors refer to them),
//! then a table per kind.

use std::{sync::Arc, time::Duration};

use super::{
    FilesArgs,
    oneshot::{Applied, Engine, table},
    resources,
};
use crate::{
    api::{BackupPolicy, DnsRecord, MonitorTarget, ProxmoxGuest, ProxyHost, UpdatePolicy},
    config::Config,
    metrics::Metrics,
    reconcile::kind::{Kind, Lookup},
};

/// Exit 0: all applied; 1: something failed (a check that is Down is not a failure).
pub async fn run(a: FilesArgs) -> anyhow::Result<i32> {
    let config = Config::load(&a.config.config)?;
    let loaded = resources::load(&a.files)?;
    let engine = Engine::new(&config, Arc::new(Metrics::default()))?;
    let deadline = Duration::from_secs(a.timeout);
    let progress = |line: &str| println!("{line}");
    let files = loaded.files();
    let guests = engine
        .apply_all(&loaded.guests, &files, a.concurrency.into(), deadline, &progress)
        .await;
    // What refers to a guest sees the status just given to it.
    files.applied(&guests);
    let records = apply_each(&engine, &loaded.records(), &files, deadline, &progress).await;
    print_table::<ProxmoxGuest>(&guests);
    print_table::<DnsRecord>(&records);
    let proxies = apply_each(&engine, &loaded.proxies(), &files, deadline, &progress).await;
    print_table::<ProxyHost>(&proxies);
    let policies = apply_each(&engine, &loaded.policies, &files, deadline, &progress).await;
    print_table::<BackupPolicy>(&policies);
    // Each check runs once; notifications are the controller's (a one-shot run has no history to alert on).
    let checked = apply_each(&engine, &loaded.monitors(), &files, deadline, &progress).await;
    print_table::<MonitorTarget>(&checked);
    // A policy runs here only when asked to (its homelab.dev/update-now annotation).
    let updates = apply_each(&engine, &loaded.updates, &files, deadline, &progress).await;
    print_table::<UpdatePolicy>(&updates);
    loaded.report_skipped();
    let failed = failed(&guests) || failed(&records) || failed(&proxies) || failed(&policies) || failed(&updates);
    Ok(if failed { 1 } else { 0 })
}

/// One at a time, in file order.
pub async fn apply_each<K: Kind>(
    engine: &Engine,
    objs: &[K],
    lookup: &dyn Lookup,
    deadline: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> Vec<Applied<K::Status>> {
    engine.apply_all(objs, lookup, 1, deadline, progress).await
}

fn print_table<K: Kind>(results: &[Applied<K::Status>]) {
    if !results.is_empty() {
        println!("\n{}", table::<K>(results));
    }
}

fn failed<S>(results: &[Applied<S>]) -> bool {
    results.iter().any(|r| r.error.is_some())
}
