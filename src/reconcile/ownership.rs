//! The ownership mark: a PVE tag and a description line bound to the
//! resource's UID, so the operator finds its guest again after any restart.

/// Who a guest belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

const TAG_PREFIX: &str = "hlo-";
const LINE_PREFIX: &str = "managed-by: homelab-operator";

impl Identity {
    /// Resources read from files have no UID; derive a stable one from
    /// namespace/name so repeated `apply` runs find the same guest.
    pub fn new(namespace: &str, name: &str, uid: Option<&str>) -> Self {
        let uid = match uid {
            Some(u) if !u.is_empty() => u.to_ascii_lowercase(),
            _ => {
                use sha2::{Digest, Sha256};
                let h = hex::encode(Sha256::digest(format!("{namespace}/{name}").as_bytes()));
                format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
            }
        };
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
        }
    }

    /// The identity of any resource (files have no namespace or UID: `default`, derived).
    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        Self::new(
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or(""),
            meta.uid.as_deref(),
        )
    }

    /// PVE tags allow `[a-z0-9_][a-z0-9_\-+.]*`, which a UID fits.
    pub fn mark_tag(&self) -> String {
        format!("{TAG_PREFIX}{}", self.uid)
    }

    pub fn mark_line(&self) -> String {
        format!("{LINE_PREFIX} {}/{} uid={}", self.namespace, self.name, self.uid)
    }

    pub fn has_tag(&self, tags: &[String]) -> bool {
        tags.iter().any(|t| t.eq_ignore_ascii_case(&self.mark_tag()))
    }

    pub fn in_description(&self, description: &str) -> bool {
        description.lines().any(|l| l.trim() == self.mark_line())
    }
}

/// Any operator mark (ours or another resource's).
pub fn is_mark_tag(tag: &str) -> bool {
    tag.starts_with(TAG_PREFIX) && tag.len() == TAG_PREFIX.len() + 36
}

pub fn is_mark_line(line: &str) -> bool {
    line.trim_start().starts_with(LINE_PREFIX)
}

/// Whether a one-line comment carries a mark (after the owner's own words, as on adopted jobs).
pub fn has_mark(comment: &str) -> bool {
    comment.contains(LINE_PREFIX)
}

/// The `namespace` and `name` of the resource a mark names, from any text carrying one.
pub fn owner_in(text: &str) -> Option<(&str, &str)> {
    let rest = &text[text.find(LINE_PREFIX)? + LINE_PREFIX.len()..];
    rest.split_whitespace().next()?.split_once('/')
}

/// The description with every operator line removed (for `Retain`).
pub fn strip_mark_lines(description: &str) -> String {
    description.lines().filter(|l| !is_mark_line(l)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        let id = Identity::new("apps", "web", Some("3F1C2B4A-9D8E-4F7A-B6C5-1D2E3F4A5B6C"));
        assert_eq!(id.mark_tag(), "hlo-3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c");
        assert!(is_mark_tag(&id.mark_tag()));
        let desc = format!("my web server\n{}\n", id.mark_line());
        assert_eq!(owner_in(&desc), Some((id.namespace.as_str(), id.name.as_str())));
        assert_eq!(
            owner_in(&format!("Nightly | {}", id.mark_line())),
            Some((id.namespace.as_str(), id.name.as_str()))
        );
        assert_eq!(owner_in("my web server"), None);
        assert!(id.in_description(&desc));
        assert_eq!(strip_mark_lines(&desc), "my web server");
        let cli = Identity::new("apps", "web", None);
        assert_eq!(cli, Identity::new("apps", "web", None));
        assert!(is_mark_tag(&cli.mark_tag()));
    }
}
