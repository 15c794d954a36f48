//! "Back up now": every new `homelab.dev/backup-now` value runs one vzdump per
//! node that has members; the tasks are polled, never awaited, and each
//! guest that failed is named with the error line of the task log.

use std::collections::BTreeMap;

use super::freshness::Member;
use crate::{
    api::{BackupPolicySpec, BackupPolicyStatus, BackupRun, FailedGuest, RunTask},
    providers::pve::{Params, PveApi, Upid},
    reconcile::{ReconcileError, StatusSink, backup_policy::job},
};

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Whether `request` asks for a run that has not been started yet.
pub fn requested(request: Option<&str>, status: &BackupPolicyStatus) -> Option<String> {
    let r = request.filter(|r| !r.is_empty())?;
    (status.last_run.as_ref().map(|run| run.request.as_str()) != Some(r)).then(|| r.to_string())
}

/// Members by node (those whose node is unknown looked up in the cluster's
/// guests), and the VMIDs no node has: nothing is sent for those (PVE
/// would refuse `POST /nodes//vzdump`), they are failed at once.
async fn by_node<P: PveApi>(api: &P, members: &[Member]) -> Result<(BTreeMap<String, Vec<u32>>, Vec<u32>), ReconcileError> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut nowhere = vec![];
    let unknown: Vec<u32> = members.iter().filter(|m| m.node.is_none()).map(|m| m.vmid).collect();
    let resources = if unknown.is_empty() {
        vec![]
    } else {
        api.cluster_resources()
            .await
            .map_err(|e| ReconcileError::pve("listing cluster resources", e))?
    };
    for m in members {
        let node = m
            .node
            .clone()
            .or_else(|| resources.iter().find(|r| r.vmid == m.vmid as u64).map(|r| r.node.clone()));
        match node.filter(|n| !n.is_empty()) {
            Some(node) => out.entry(node).or_default().push(m.vmid),
            None => nowhere.push(m.vmid),
        }
    }
    Ok((out, nowhere))
}

/// Start the run: one vzdump per node, each saved in status as soon as it
/// started, so a restart polls it instead of starting it again.
pub async fn start<P: PveApi, S: StatusSink<BackupPolicyStatus> + ?Sized>(
    api: &P,
    spec: &BackupPolicySpec,
    members: &[Member],
    request: String,
    status: &mut BackupPolicyStatus,
    sink: &S,
) -> Result<(), ReconcileError> {
    let prune = job::prune_string(spec.retention.as_ref());
    let (nodes, nowhere) = by_node(api, members).await?;
    let failed = nowhere.into_iter().map(|vmid| FailedGuest {
        vmid,
        error: format!("no guest with VMID {vmid} on the cluster; nothing was sent for it"),
    });
    status.last_run = Some(BackupRun {
        request,
        started: now(),
        failed: failed.collect(),
        ..Default::default()
    });
    sink.save(status).await.map_err(ReconcileError::Status)?;
    for (node, vmids) in nodes {
        let params: Params = [
            ("vmid", vmids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
            ("storage", spec.storage.clone()),
            ("mode", job::mode_str(spec.mode).to_string()),
            ("notes-template", spec.notes_template.clone()),
            ("prune-backups", prune.clone()),
            ("remove", "1".into()),
        ]
        .into_iter()
        // Empty: not set (no notes; the storage's retention).
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let upid = api
            .vzdump(&node, params)
            .await
            .map_err(|e| ReconcileError::pve(format!("starting a backup on {node}"), e))?;
        if let Some(run) = status.last_run.as_mut() {
            run.tasks.push(RunTask {
                node,
                upid: upid.raw,
                exit: None,
            });
        }
        sink.save(status).await.map_err(ReconcileError::Status)?;
    }
    Ok(())
}

/// Poll the run's tasks; true once every one has ended (and the run is summed up).
pub async fn poll<P: PveApi>(api: &P, run: &mut BackupRun) -> Result<bool, ReconcileError> {
    if run.finished.is_some() {
        return Ok(true);
    }
    for task in run.tasks.iter_mut().filter(|t| t.exit.is_none()) {
        let Some(upid) = Upid::parse(&task.upid) else {
            task.exit = Some("unknown task".into());
            continue;
        };
        let st = match api.task_status(&upid).await {
            Ok(st) => st,
            Err(e) if e.is_transient() => return Err(ReconcileError::pve("polling the backup", e)),
            // The node forgot the task (it restarted): the backups say what happened.
            Err(_) => {
                task.exit = Some("task lost".into());
                continue;
            }
        };
        if st.is_running() {
            continue;
        }
        task.exit = Some(st.exitstatus.clone().unwrap_or_default());
        if st.failure().is_some() {
            let log = api
                .task_log(&upid)
                .await
                .map_err(|e| ReconcileError::pve("reading the backup log", e))?;
            run.failed.extend(failures(&log));
        }
    }
    if run.tasks.iter().any(|t| t.exit.is_none()) {
        return Ok(false);
    }
    run.finished = Some(now());
    run.result = Some(match run.failed.len() {
        0 => "OK".into(),
        n => format!("{n} guests failed"),
    });
    Ok(true)
}

/// vzdump's `ERROR: Backup of VM 101 failed - <why>` lines.
pub fn failures(log: &[String]) -> Vec<FailedGuest> {
    let re = regex::Regex::new(r"^ERROR: Backup of VM (\d+) failed - (.*)$").expect("regex");
    log.iter()
        .filter_map(|l| {
            let c = re.captures(l)?;
            Some(FailedGuest {
                vmid: c[1].parse().ok()?,
                error: c[2].to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_runs_once() {
        let mut s = BackupPolicyStatus::default();
        assert_eq!(requested(None, &s), None);
        assert_eq!(requested(Some("1"), &s).as_deref(), Some("1"));
        s.last_run = Some(BackupRun {
            request: "1".into(),
            ..Default::default()
        });
        assert_eq!(requested(Some("1"), &s), None, "already run");
        assert_eq!(requested(Some("2"), &s).as_deref(), Some("2"));
    }

    #[test]
    fn failing_guests_come_from_the_task_log() {
        let log: Vec<String> = [
            "INFO: Starting Backup of VM 100 (qemu)",
            "INFO: Finished Backup of VM 100 (00:00:02)",
            "INFO: Starting Backup of VM 101 (lxc)",
            "ERROR: Backup of VM 101 failed - unable to open file '/etc/pve/nodes/pve1/lxc/101.conf.tmp' - No space left on device",
            "INFO: Backup job finished with errors",
            "TASK ERROR: job errors",
        ]
        .map(String::from)
        .to_vec();
        let f = failures(&log);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].vmid, 101);
        assert!(f[0].error.ends_with("No space left on device"));
    }
}
