//! desired record + what the server has → actions. Pure.

use crate::{
    api::{DeletionPolicy, RecordPolicy, RecordType},
    providers::dns::{RecordSet, absolute},
    reconcile::Blocked,
};

/// Values in one canonical presentation form, so that what we send and what
/// the server answers compare equal: addresses re-printed, names absolute and
/// lower case, TXT quoted, sorted.
pub fn normalize(rtype: RecordType, values: &[String]) -> Result<Vec<String>, String> {
    let mut out = values
        .iter()
        .map(|v| {
            let v = v.trim();
            match rtype {
                RecordType::A => v
                    .parse::<std::net::Ipv4Addr>()
                    .map(|a| a.to_string())
                    .map_err(|_| format!("{v:?} is not an IPv4 address")),
                RecordType::AAAA => v
                    .parse::<std::net::Ipv6Addr>()
                    .map(|a| a.to_string())
                    .map_err(|_| format!("{v:?} is not an IPv6 address")),
                RecordType::CNAME | RecordType::PTR | RecordType::NS => Ok(absolute(v)),
                RecordType::MX => match v.split_once(' ') {
                    Some((p, host)) if p.parse::<u16>().is_ok() => Ok(format!("{p} {}", absolute(host.trim()))),
                    _ => Err(format!("{v:?} is not 'PRIORITY HOST'")),
                },
                RecordType::SRV => {
                    let parts: Vec<&str> = v.split_whitespace().collect();
                    match parts.as_slice() {
                        [p, w, port, host] if [p, w, port].iter().all(|n| n.parse::<u16>().is_ok()) => {
                            Ok(format!("{p} {w} {port} {}", absolute(host)))
                        }
                        _ => Err(format!("{v:?} is not 'PRIORITY WEIGHT PORT HOST'")),
                    }
                }
                RecordType::TXT => Ok(if v.starts_with('"') && v.ends_with('"') && v.len() >= 2 {
                    v.to_string()
                } else {
                    txt_strings(v)
                }),
                RecordType::CAA => caa(v),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// A TXT value as quoted character-strings of at most 255 bytes each (longer
/// strings are what servers refuse), split on character boundaries.
fn txt_strings(v: &str) -> String {
    let mut chunks: Vec<String> = vec![String::new()];
    for c in v.chars() {
        let last = chunks.last_mut().expect("one chunk");
        if last.len() + c.len_utf8() > 255 {
            chunks.push(String::new());
        }
        chunks.last_mut().expect("one chunk").push(c);
    }
    chunks
        .iter()
        .map(|c| format!("\"{}\"", c.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `FLAGS TAG VALUE` (RFC 8659): flags 0–255, an alphanumeric tag, the value quoted.
fn caa(v: &str) -> Result<String, String> {
    let mut parts = v.splitn(3, ' ');
    let (flags, tag, value) = (parts.next(), parts.next(), parts.next().map(str::trim));
    match (flags.and_then(|f| f.parse::<u8>().ok()), tag, value) {
        (Some(f), Some(t), Some(val)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()) && !val.is_empty() => {
            Ok(format!("{f} {} \"{}\"", t.to_ascii_lowercase(), val.trim_matches('"')))
        }
        _ => Err(format!(
            "{v:?} is not 'FLAGS TAG VALUE' (flags 0-255, e.g. 0 issue \"letsencrypt.org\")"
        )),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsAction {
    /// Write the whole RRset with our mark (create, update or adopt).
    Put {
        set: RecordSet,
        why: &'static str,
    },
    Delete,
    /// Keep the RRset, drop our mark (deletion with Retain / UpsertOnly / CreateOnly).
    ReleaseMark(RecordSet),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsPlan {
    pub actions: Vec<DnsAction>,
    /// Why nothing can be written.
    pub blocked: Option<Blocked>,
    /// Adopting the record as it is: the write adds only the ownership mark.
    pub marks_only: bool,
}

/// What to write so the server has `desired` (which carries our mark).
pub fn plan(desired: &RecordSet, observed: Option<&RecordSet>, adopt: bool, policy: RecordPolicy) -> DnsPlan {
    let Some(obs) = observed else {
        return DnsPlan {
            actions: vec![DnsAction::Put {
                set: desired.clone(),
                why: "Created",
            }],
            blocked: None,
            marks_only: false,
        };
    };
    let ours = obs.mark.is_some() && obs.mark == desired.mark;
    if !ours && !adopt {
        let owner = match &obs.mark {
            Some(m) => format!(" (marked by another resource: {m})"),
            None => String::new(),
        };
        return DnsPlan {
            actions: vec![],
            blocked: Some(Blocked::new(
                "Conflict",
                format!(
                    "{} {} already exists with {}{owner} and the operator does not own it; set adopt: true to take it over, or choose another name",
                    obs.name,
                    obs.rtype,
                    obs.values.join(", ")
                ),
            )),
            marks_only: false,
        };
    }
    let same = obs.values == desired.values && obs.ttl == desired.ttl;
    if !ours {
        return DnsPlan {
            actions: vec![DnsAction::Put {
                set: desired.clone(),
                why: "Adopted",
            }],
            blocked: None,
            marks_only: same,
        };
    }
    if same || policy == RecordPolicy::CreateOnly {
        return DnsPlan::default();
    }
    DnsPlan {
        actions: vec![DnsAction::Put {
            set: desired.clone(),
            why: "Updated",
        }],
        blocked: None,
        marks_only: false,
    }
}

/// What deleting the resource does to the record.
pub fn plan_delete(observed: Option<&RecordSet>, our_mark: &str, policy: RecordPolicy, deletion: DeletionPolicy) -> Vec<DnsAction> {
    match observed {
        Some(obs) if obs.mark.as_deref() == Some(our_mark) => {
            if policy == RecordPolicy::Sync && deletion == DeletionPolicy::Delete {
                vec![DnsAction::Delete]
            } else {
                vec![DnsAction::ReleaseMark(RecordSet { mark: None, ..obs.clone() })]
            }
        }
        // Not ours (or gone): never touched.
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = "managed-by: homelab-operator apps/web uid=1";

    fn rs(values: &[&str], ttl: u32, mark: Option<&str>) -> RecordSet {
        RecordSet {
            name: "web.home.arpa.".into(),
            rtype: "A".into(),
            ttl,
            values: values.iter().map(|s| s.to_string()).collect(),
            mark: mark.map(str::to_string),
        }
    }

    #[test]
    fn normalizes_values_by_type() {
        let n = |t, v: &[&str]| normalize(t, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(n(RecordType::AAAA, &["FD00:0:0::21"]).unwrap(), vec!["fd00::21"]);
        assert_eq!(n(RecordType::CNAME, &["Web.Home.Arpa"]).unwrap(), vec!["web.home.arpa."]);
        assert_eq!(n(RecordType::MX, &["10 mail.home.arpa"]).unwrap(), vec!["10 mail.home.arpa."]);
        assert_eq!(n(RecordType::TXT, &["v=spf1 -all"]).unwrap(), vec!["\"v=spf1 -all\""]);
        // A DKIM key is longer than one character-string may be: split, never refused.
        let dkim = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
        let split = n(RecordType::TXT, &[dkim.as_str()]).unwrap().remove(0);
        let strings: Vec<&str> = split.split("\" \"").collect();
        assert_eq!(strings.len(), 2, "{split}");
        assert!(strings.iter().all(|s| s.trim_matches('"').len() <= 255));
        assert_eq!(split.replace("\" \"", "").trim_matches('"'), dkim);
        assert_eq!(
            n(RecordType::CAA, &["0 ISSUE letsencrypt.org"]).unwrap(),
            vec!["0 issue \"letsencrypt.org\""]
        );
        assert_eq!(
            n(RecordType::CAA, &["0 issue \"letsencrypt.org\""]).unwrap(),
            vec!["0 issue \"letsencrypt.org\""]
        );
        assert!(
            n(RecordType::CAA, &["256 issue ca.example"])
                .unwrap_err()
                .contains("FLAGS TAG VALUE")
        );
        assert!(n(RecordType::MX, &["70000 mail.home.arpa"]).is_err());
        assert_eq!(
            n(RecordType::A, &["10.0.0.2", "10.0.0.1", "10.0.0.2"]).unwrap(),
            vec!["10.0.0.1", "10.0.0.2"]
        );
        assert!(n(RecordType::A, &["fd00::1"]).is_err());
        assert!(n(RecordType::SRV, &["10 5 web"]).is_err());
    }

    #[test]
    fn table() {
        let want = rs(&["10.0.0.1"], 300, Some(MARK));
        // create
        assert_eq!(
            plan(&want, None, false, RecordPolicy::Sync).actions,
            vec![DnsAction::Put {
                set: want.clone(),
                why: "Created"
            }]
        );
        // no-op
        assert_eq!(plan(&want, Some(&want), false, RecordPolicy::Sync), DnsPlan::default());
        // update values / ttl
        let old = rs(&["10.0.0.9"], 300, Some(MARK));
        assert_eq!(plan(&want, Some(&old), false, RecordPolicy::Sync).actions.len(), 1);
        assert_eq!(
            plan(&want, Some(&rs(&["10.0.0.1"], 60, Some(MARK))), false, RecordPolicy::UpsertOnly)
                .actions
                .len(),
            1
        );
        // CreateOnly never changes an existing record
        assert!(plan(&want, Some(&old), false, RecordPolicy::CreateOnly).actions.is_empty());
        // foreign conflict, then adopt
        let foreign = rs(&["10.0.0.5"], 300, None);
        let p = plan(&want, Some(&foreign), false, RecordPolicy::Sync);
        assert!(p.actions.is_empty());
        let crate::reconcile::Blocked { reason, message: msg } = p.blocked.unwrap();
        assert_eq!(reason, "Conflict");
        assert!(
            msg.contains("web.home.arpa. A already exists with 10.0.0.5") && msg.contains("adopt: true"),
            "{msg}"
        );
        let other = rs(&["10.0.0.5"], 300, Some("managed-by: homelab-operator apps/other uid=2"));
        assert!(
            plan(&want, Some(&other), false, RecordPolicy::Sync)
                .blocked
                .unwrap()
                .message
                .contains("apps/other")
        );
        assert_eq!(
            plan(&want, Some(&foreign), true, RecordPolicy::Sync).actions,
            vec![DnsAction::Put {
                set: want.clone(),
                why: "Adopted"
            }]
        );
    }

    #[test]
    fn deletion_table() {
        let ours = rs(&["10.0.0.1"], 300, Some(MARK));
        assert_eq!(
            plan_delete(Some(&ours), MARK, RecordPolicy::Sync, DeletionPolicy::Delete),
            vec![DnsAction::Delete]
        );
        assert_eq!(
            plan_delete(Some(&ours), MARK, RecordPolicy::Sync, DeletionPolicy::Retain),
            vec![DnsAction::ReleaseMark(rs(&["10.0.0.1"], 300, None))]
        );
        assert_eq!(
            plan_delete(Some(&ours), MARK, RecordPolicy::UpsertOnly, DeletionPolicy::Delete).len(),
            1
        );
        assert!(matches!(
            plan_delete(Some(&ours), MARK, RecordPolicy::UpsertOnly, DeletionPolicy::Delete)[0],
            DnsAction::ReleaseMark(_)
        ));
        assert!(
            plan_delete(
                Some(&rs(&["10.0.0.1"], 300, None)),
                MARK,
                RecordPolicy::Sync,
                DeletionPolicy::Delete
            )
            .is_empty()
        );
        assert!(plan_delete(None, MARK, RecordPolicy::Sync, DeletionPolicy::Delete).is_empty());
    }
}
