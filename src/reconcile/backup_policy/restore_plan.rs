//! When a restore test is due, which backup it restores and to which scratch
//! VMID. Pure; `restore_test` does the I/O.

use std::collections::HashSet;

use crate::{
    api::{BackupMember, BackupRef, RestoreTest, RestoreTestRun, VmidRange},
    providers::pve::GuestKind,
};

/// Why a test starts now: a new `restore-test-now` value, or an occurrence of
/// the schedule since the last test (or since `since`, the policy's creation).
pub fn due(
    rt: &RestoreTest,
    request: Option<&str>,
    last: Option<&RestoreTestRun>,
    since: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Result<Option<String>, String> {
    if last.is_some_and(|l| l.finished.is_none()) {
        return Ok(None);
    }
    if let Some(r) = request.filter(|r| !r.is_empty())
        && last.and_then(|l| l.handled_request.as_deref()) != Some(r)
    {
        return Ok(Some(r.to_string()));
    }
    let baseline = last
        .and_then(|l| l.started.parse::<jiff::Timestamp>().ok())
        .unwrap_or(since)
        .max(since);
    let cron = crate::cron::parse("restoreTest.schedule", &rt.schedule)?;
    let next = cron
        .find_next_occurrence(&baseline.to_zoned(jiff::tz::TimeZone::UTC), false)
        .map_err(|e| format!("restoreTest.schedule {:?}: {e}", rt.schedule))?;
    Ok((next.timestamp() <= now).then(|| format!("schedule {}", next.timestamp())))
}

/// The newest backup of any member that did not fail verification.
pub fn pick_backup(members: &[BackupMember]) -> Option<(&BackupMember, &BackupRef)> {
    members
        .iter()
        .filter_map(|m| Some((m, m.newest.as_ref()?)))
        .filter(|(_, b)| b.verified.as_deref() != Some("failed"))
        .max_by(|a, b| a.1.time.cmp(&b.1.time))
}

/// The first VMID of the range that no guest uses.
pub fn free_vmid(range: VmidRange, used: &HashSet<u64>) -> Option<u32> {
    (range.first..=range.last).find(|v| !used.contains(&(*v as u64)))
}

/// A backup's guest type from its volume id (`…:backup/ct/…`, `vzdump-lxc-…`).
pub fn kind_of(volid: &str) -> GuestKind {
    match volid.contains("backup/ct/") || volid.contains("vzdump-lxc-") {
        true => GuestKind::Lxc,
        false => GuestKind::Qemu,
    }
}

/// The only tag a scratch guest carries (the original's include the operator's ownership mark).
pub const SCRATCH_TAG: &str = "homelab-restore-test";

/// `net0` … as restored: link down, so a started copy never answers on the
/// original's addresses. Only NIC keys are touched.
pub fn isolated_nic(key: &str, value: &str) -> Option<String> {
    let is_nic = key.strip_prefix("net").is_some_and(|n| n.parse::<u8>().is_ok());
    if !is_nic || value.split(',').any(|p| p == "link_down=1") {
        return None;
    }
    let kept: Vec<&str> = value.split(',').filter(|p| !p.starts_with("link_down=")).collect();
    Some(format!("{},link_down=1", kept.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(schedule: &str) -> RestoreTest {
        RestoreTest {
            schedule: schedule.into(),
            scratch_vmids: VmidRange { first: 9900, last: 9902 },
            storage: "local-lvm".into(),
            node: "pve1".into(),
            start: true,
        }
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_schedule_fires_once_per_occurrence() {
        let since = ts("2026-12-01T10:00:00Z");
        let weekly = rt("0 5 * * 0"); // Sundays 05:00
        assert_eq!(due(&weekly, None, None, since, ts("2026-12-05T12:00:00Z")).unwrap(), None);
        let first = due(&weekly, None, None, since, ts("2026-12-06T05:00:30Z")).unwrap().unwrap();
        assert_eq!(first, "schedule 2026-12-06T05:00:00Z");
        let last = RestoreTestRun {
            request: first,
            started: "2026-12-06T05:00:30Z".into(),
            finished: Some("2026-12-06T05:03:00Z".into()),
            ..Default::default()
        };
        assert_eq!(due(&weekly, None, Some(&last), since, ts("2026-12-10T00:00:00Z")).unwrap(), None);
        assert!(
            due(&weekly, None, Some(&last), since, ts("2026-12-13T05:01:00Z"))
                .unwrap()
                .is_some()
        );
        assert!(due(&rt("@daily"), None, None, since, ts("2026-12-02T00:00:01Z")).unwrap().is_some());
    }

    #[test]
    fn each_request_value_runs_once_and_never_while_one_runs() {
        let since = ts("2026-12-01T10:00:00Z");
        let now = ts("2026-12-01T11:00:00Z");
        let r = rt("0 5 * * 0");
        assert_eq!(due(&r, Some("1"), None, since, now).unwrap().as_deref(), Some("1"));
        let mut last = RestoreTestRun {
            request: "1".into(),
            handled_request: Some("1".into()),
            started: now.to_string(),
            ..Default::default()
        };
        assert_eq!(due(&r, Some("2"), Some(&last), since, now).unwrap(), None, "one at a time");
        last.finished = Some(now.to_string());
        assert_eq!(due(&r, Some("1"), Some(&last), since, now).unwrap(), None);
        assert_eq!(due(&r, Some("2"), Some(&last), since, now).unwrap().as_deref(), Some("2"));
        assert!(due(&rt("not cron"), None, None, since, now).is_err());
    }

    #[test]
    fn picks_the_newest_good_backup_and_a_free_vmid() {
        let m = |vmid, time: &str, verified: Option<&str>| BackupMember {
            vmid,
            newest: Some(BackupRef {
                volid: format!("pbs1:backup/vm/{vmid}/{time}"),
                time: time.into(),
                verified: verified.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        };
        let members = vec![
            m(100, "2026-12-01T02:30:00Z", Some("ok")),
            m(101, "2026-12-02T02:30:00Z", Some("failed")),
            m(102, "2026-12-01T03:30:00Z", None),
        ];
        assert_eq!(pick_backup(&members).unwrap().0.vmid, 102);
        let used: HashSet<u64> = [9900, 9901].into();
        assert_eq!(free_vmid(VmidRange { first: 9900, last: 9902 }, &used), Some(9902));
        assert_eq!(free_vmid(VmidRange { first: 9900, last: 9901 }, &used), None);
        assert_eq!(kind_of("pbs1:backup/ct/105/2026-12-01T02:30:00Z"), GuestKind::Lxc);
        assert_eq!(kind_of("local:backup/vzdump-qemu-100-2026_12_01-02_30_00.vma.zst"), GuestKind::Qemu);
    }

    #[test]
    fn restored_nics_come_up_with_their_link_down() {
        assert_eq!(
            isolated_nic("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0").unwrap(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,link_down=1"
        );
        assert_eq!(isolated_nic("net0", "name=eth0,bridge=vmbr0,link_down=1"), None);
        assert_eq!(isolated_nic("scsi0", "local-lvm:vm-1-disk-0"), None);
    }
}
