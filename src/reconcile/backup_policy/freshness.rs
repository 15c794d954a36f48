//! Each member's newest backup and whether it is fresh, from one content
//! listing of the policy's storage (however many members there are). Pure.

use std::time::Duration;

use crate::{
    api::{BackupMember, BackupRef},
    providers::pve::StorageVolume,
};

/// `26h`, `7d`, `1d12h`, `2w`, `90m` (the `maxAge` syntax), above zero.
pub fn parse_age(s: &str) -> Option<Duration> {
    crate::human::parse_duration(s).filter(|d| !d.is_zero())
}

/// A member before its backups are known: name (ProxmoxGuest), VMID, node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: Option<String>,
    pub vmid: u32,
    pub node: Option<String>,
}

fn rfc3339(epoch: u64) -> String {
    jiff::Timestamp::from_second(epoch as i64).map_or_else(|_| epoch.to_string(), |t| t.to_string())
}

/// Members with their newest backup (by creation time) among `backups`, fresh
/// when younger than `max_age` at `now` (seconds since the epoch).
pub fn members(members: &[Member], backups: &[StorageVolume], now: u64, max_age: Duration) -> Vec<BackupMember> {
    members
        .iter()
        .map(|m| {
            let newest = backups
                .iter()
                .filter(|b| b.vmid == Some(m.vmid as u64) && b.content.as_deref().is_none_or(|c| c == "backup"))
                .max_by_key(|b| b.ctime.unwrap_or(0));
            let fresh = newest.is_some_and(|b| now.saturating_sub(b.ctime.unwrap_or(0)) <= max_age.as_secs());
            BackupMember {
                name: m.name.clone(),
                vmid: m.vmid,
                node: m.node.clone(),
                newest: newest.map(|b| BackupRef {
                    volid: b.volid.clone(),
                    time: rfc3339(b.ctime.unwrap_or(0)),
                    size: b.size,
                    verified: b.verification.as_ref().map(|v| v.state.clone()),
                    protected: b.protected,
                }),
                fresh,
                since: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(vmid: u64, ctime: u64, verified: Option<&str>) -> StorageVolume {
        StorageVolume {
            volid: format!("pbs1:backup/vm/{vmid}/{ctime}"),
            content: Some("backup".into()),
            format: Some("pbs-vm".into()),
            size: 1 << 30,
            ctime: Some(ctime),
            vmid: Some(vmid),
            protected: false,
            verification: verified.map(|s| crate::providers::pve::Verification { state: s.into() }),
            notes: None,
        }
    }

    fn member(name: &str, vmid: u32) -> Member {
        Member {
            name: Some(name.into()),
            vmid,
            node: Some("pve1".into()),
        }
    }

    #[test]
    fn ages_parse_like_the_schema_says() {
        assert_eq!(parse_age("26h"), Some(Duration::from_secs(26 * 3600)));
        assert_eq!(parse_age("1d12h"), Some(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_age("2w"), Some(Duration::from_secs(14 * 86400)));
        for bad in ["", "26", "h", "1x", "0h"] {
            assert_eq!(parse_age(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_newest_backup_decides_and_members_without_one_are_named() {
        let now = 1_800_000_000;
        let day = 86_400;
        let backups = [
            backup(100, now - 3 * day, Some("ok")),
            backup(100, now - 3600, Some("ok")),
            backup(101, now - 2 * day, Some("failed")),
            backup(999, now, None), // not a member
        ];
        let ms = members(
            &[member("web01", 100), member("jellyfin", 101), member("dns01", 102)],
            &backups,
            now,
            parse_age("26h").unwrap(),
        );
        assert!(ms[0].fresh);
        assert_eq!(ms[0].newest.as_ref().unwrap().volid, format!("pbs1:backup/vm/100/{}", now - 3600));
        assert_eq!(ms[0].newest.as_ref().unwrap().verified.as_deref(), Some("ok"));
        assert!(!ms[1].fresh && ms[1].newest.is_some());
        assert!(!ms[2].fresh && ms[2].newest.is_none());
    }
}
