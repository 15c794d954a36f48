//! The policy's side on the Proxmox Backup Server: read jobs, GC and
//! snapshots in a constant number of calls, write what `pbs_jobs` planned,
//! and report job states. Snapshots become the members' backups, with their
//! verification state.

use std::{collections::BTreeMap, time::Duration};

use super::pbs_jobs::{self, PbsStep};
use crate::{
    api::{BackupPolicySpec, PbsJobState, PbsOptions},
    providers::{
        pbs::{DatastoreConfig, GcStatus, Job, JobKind, PbsApi, Snapshot},
        pve::{StorageVolume, Verification},
    },
    reconcile::{Blocked, EventNote, ReconcileError, backup_policy::job::job_id, listings::Listings, ownership::Identity},
};

/// What the server holds for one policy.
pub struct Observed {
    pub jobs: BTreeMap<JobKind, Vec<Job>>,
    pub datastore: Option<DatastoreConfig>,
    pub gc: Option<GcStatus>,
    pub snapshots: Vec<Snapshot>,
}

/// A datastore's snapshots listed once per resync interval for every policy
/// backing up to it, with the job runs they were listed after.
pub struct SharedSnapshots<'a> {
    pub listings: &'a Listings<ListedSnapshots>,
    pub max_age: Duration,
}

/// A datastore's snapshots and a digest of its jobs' last runs when they were listed.
pub type ListedSnapshots = (u64, Vec<Snapshot>);

/// The last runs of every job on `store` (ours or not): a prune, verify or
/// sync run that ended since the listing changes the snapshots.
fn job_runs(jobs: &BTreeMap<JobKind, Vec<Job>>, store: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (kind, job) in jobs.iter().flat_map(|(k, js)| js.iter().map(move |j| (k, j))) {
        if job.store() == Some(store) {
            (kind.as_str(), &job.id, job.last_run_endtime()).hash(&mut h);
        }
    }
    h.finish()
}

fn snapshots_key(pbs: &PbsOptions) -> String {
    format!("{}/{}", pbs.endpoint, pbs.datastore)
}

impl SharedSnapshots<'_> {
    /// The next reader lists the datastore (a backup run changes it).
    pub async fn forget(&self, pbs: &PbsOptions) {
        self.listings.forget(&snapshots_key(pbs)).await;
    }
}

/// Three job listings, the datastore's snapshots (from the shared listing when
/// one is given), and the GC state when the policy manages it.
pub async fn observe<B: PbsApi>(api: &B, pbs: &PbsOptions, shared: Option<&SharedSnapshots<'_>>) -> Result<Observed, ReconcileError> {
    let mut jobs = BTreeMap::new();
    for kind in JobKind::ALL {
        let list = api
            .jobs(kind)
            .await
            .map_err(|e| ReconcileError::pbs(format!("listing PBS {} jobs", kind.as_str()), e))?;
        jobs.insert(kind, list);
    }
    let store = &pbs.datastore;
    let snapshots = match shared {
        Some(s) => shared_snapshots(api, pbs, s, job_runs(&jobs, store)).await,
        None => api.snapshots(store).await,
    }
    .map_err(|e| ReconcileError::pbs(format!("listing snapshots of datastore {store}"), e))?;
    let (datastore, gc) = match pbs.garbage_collection {
        Some(_) => (
            Some(
                api.datastore_config(store)
                    .await
                    .map_err(|e| ReconcileError::pbs("reading the datastore config", e))?,
            ),
            Some(
                api.gc_status(store)
                    .await
                    .map_err(|e| ReconcileError::pbs("reading the garbage-collection state", e))?,
            ),
        ),
        None => (None, None),
    };
    Ok(Observed {
        jobs,
        datastore,
        gc,
        snapshots,
    })
}

/// The datastore's snapshots from the shared listing, listed again when a job ran since.
async fn shared_snapshots<B: PbsApi>(
    api: &B,
    pbs: &PbsOptions,
    s: &SharedSnapshots<'_>,
    runs: u64,
) -> Result<Vec<Snapshot>, crate::providers::pbs::Error> {
    let key = snapshots_key(pbs);
    let fetch = || async { Ok((runs, api.snapshots(&pbs.datastore).await?)) };
    let mut listed = s.listings.get(&key, s.max_age, fetch).await?;
    if listed.0 != runs {
        s.listings.forget(&key).await;
        listed = s.listings.get(&key, s.max_age, fetch).await?;
    }
    Ok(listed.1.clone())
}

/// The steps for this policy (all deletions when `spec` is `None`).
pub fn plan(spec: Option<&BackupPolicySpec>, obs: &Observed, id: &Identity) -> Result<Vec<PbsStep>, Blocked> {
    let want = spec
        .and_then(|s| Some(pbs_jobs::desired(s.pbs.as_ref()?, s.retention.as_ref(), id)))
        .unwrap_or_default();
    let gc = spec
        .and_then(|s| s.pbs.as_ref()?.garbage_collection.as_ref())
        .map(|g| (g.schedule.as_str(), obs.datastore.as_ref().and_then(|d| d.gc_schedule.as_deref())));
    pbs_jobs::plan(&want, &obs.jobs, id, gc)
}

pub async fn apply<B: PbsApi>(
    api: &B,
    store: &str,
    steps: &[PbsStep],
    obs: &Observed,
    events: &mut Vec<EventNote>,
) -> Result<(), ReconcileError> {
    for step in steps {
        let what = step.describe();
        let result = match step {
            PbsStep::Create { kind, params } => api.create_job(*kind, params.clone()).await,
            PbsStep::Update { kind, id, params } => api.update_job(*kind, id, params.clone()).await,
            PbsStep::Delete { kind, id } => api.delete_job(*kind, id).await,
            PbsStep::SetGcSchedule { schedule } => {
                let digest = obs.datastore.as_ref().and_then(|d| d.digest.as_deref());
                api.set_gc_schedule(store, schedule, digest).await
            }
        };
        result.map_err(|e| ReconcileError::pbs(what.clone(), e))?;
        events.push(EventNote::normal("PbsJobChanged", format!("PBS: {what}")));
    }
    Ok(())
}

fn rfc3339(t: Option<i64>) -> Option<String> {
    t.and_then(|t| jiff::Timestamp::from_second(t).ok()).map(|t| t.to_string())
}

/// Our jobs' run states, and the datastore's GC when the policy manages it.
pub fn job_states(obs: &Observed, id: &Identity, store: &str) -> Vec<PbsJobState> {
    let ours = job_id(id);
    let mut out: Vec<PbsJobState> = obs
        .jobs
        .iter()
        .flat_map(|(kind, jobs)| jobs.iter().filter(|j| j.id == ours).map(move |j| (kind, j)))
        .map(|(kind, j)| PbsJobState {
            kind: kind.as_str().into(),
            id: j.id.clone(),
            schedule: j.param("schedule"),
            last_run_state: j.last_run_state().map(str::to_string),
            last_run: rfc3339(j.last_run_endtime()),
            next_run: rfc3339(j.next_run()),
        })
        .collect();
    if let Some(gc) = &obs.gc {
        out.push(PbsJobState {
            kind: "garbage-collection".into(),
            id: store.into(),
            schedule: gc.schedule.clone(),
            last_run_state: gc.last_run_state.clone(),
            last_run: rfc3339(gc.last_run_endtime),
            next_run: rfc3339(gc.next_run),
        });
    }
    out
}

/// PBS snapshots as PVE would list them on `storage` (volume ids
/// `storage:backup/vm/100/2026-12-02T02:30:00Z`), for the freshness report.
pub fn as_volumes(storage: &str, snapshots: &[Snapshot]) -> Vec<StorageVolume> {
    snapshots
        .iter()
        .filter(|s| matches!(s.backup_type.as_str(), "vm" | "ct"))
        .filter_map(|s| {
            let t = jiff::Timestamp::from_second(s.backup_time).ok()?;
            Some(StorageVolume {
                volid: format!(
                    "{storage}:backup/{}/{}/{}",
                    s.backup_type,
                    s.backup_id,
                    t.strftime("%Y-%m-%dT%H:%M:%SZ")
                ),
                content: Some("backup".into()),
                format: Some(format!("pbs-{}", s.backup_type)),
                size: s.size.unwrap_or(0),
                ctime: Some(s.backup_time.max(0) as u64),
                vmid: s.backup_id.parse().ok(),
                protected: s.protected,
                verification: s.verification.as_ref().map(|v| Verification { state: v.state.clone() }),
                notes: s.comment.clone(),
            })
        })
        .collect()
}
