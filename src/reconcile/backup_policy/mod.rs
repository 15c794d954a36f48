//! BackupPolicy: the vzdump job on Proxmox VE (and PBS jobs) for a set of
//! guests, and each member's newest backup. Planning is pure; see `job` and
//! `freshness`.

pub mod freshness;
pub mod job;
