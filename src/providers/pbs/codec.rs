//! Every PBS wire quirk in one place (`shared/contracts/pbs/pbs-conventions.json`):
//! the `:` in the token header, plain-text error bodies under a JSON content
//! type, real JSON booleans, UPIDs with one more field than PVE's and
//! systemd-escaped worker ids.

use serde_json::Value;

/// `Authorization` value for an API token: id and secret joined with `:` (PVE uses `=`).
pub fn token_header(token_id: &str, secret: &str) -> String {
    format!("PBSAPIToken={token_id}:{secret}")
}

/// The error text of a failed call: PBS sends the bare message as the body
/// (a JSON `message` is accepted too, for proxies in front of it).
pub fn error_message(body: &[u8], reason: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && let Some(m) = v.get("message").and_then(Value::as_str)
    {
        return m.trim().to_string();
    }
    if text.is_empty() { reason.to_string() } else { text.to_string() }
}

/// A form value for PBS: booleans as `true`/`false` (PBS takes them; PVE only 0/1).
pub fn bool_param(b: bool) -> String {
    if b { "true" } else { "false" }.to_string()
}

/// A config field as the string a form would send, for comparing desired
/// parameters with what the server holds (`3`, `true`, `daily`).
pub fn field_as_param(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(bool_param(*b)),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A PBS task id: `UPID:node:pid:pstart:task_id:starttime:type:worker_id:auth_id:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbsUpid {
    pub raw: String,
    pub node: String,
    pub starttime: u64,
    pub worker_type: String,
    /// Unescaped (`store1:v-nightly`).
    pub worker_id: String,
}

impl PbsUpid {
    pub fn parse(s: &str) -> Option<PbsUpid> {
        let parts: Vec<&str> = s.split(':').collect();
        let hex = |p: &str, min: usize, max: usize| p.len() >= min && p.len() <= max && p.chars().all(|c| c.is_ascii_hexdigit());
        let ok = parts.len() == 10
            && parts[0] == "UPID"
            && !parts[1].is_empty()
            && hex(parts[2], 8, 8)
            && hex(parts[3], 8, 9)
            && hex(parts[4], 8, 16)
            && hex(parts[5], 8, 8)
            && !parts[6].is_empty()
            && parts[9].is_empty();
        ok.then(|| PbsUpid {
            raw: s.to_string(),
            node: parts[1].to_string(),
            starttime: u64::from_str_radix(parts[5], 16).unwrap_or(0),
            worker_type: parts[6].to_string(),
            worker_id: systemd_unescape(parts[7]),
        })
    }
}

/// Undo systemd's escaping of worker ids: `\x3a` is `:`, `-` stood for `/`.
pub fn systemd_unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1] == b'x'
            && let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(if b[i] == b'-' { b'/' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// systemd escaping as PBS applies it to worker ids (for the simulator and tests).
pub fn systemd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '/' => out.push('-'),
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
            }
        }
    }
    out
}

/// A task's `exitstatus`: `OK` and `WARNINGS: n` are success; anything else is the error text.
pub fn exit_ok(exit: &str) -> bool {
    exit == "OK" || exit.starts_with("WARNINGS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_separator_is_a_colon() {
        assert_eq!(
            token_header("operator@pbs!homelab", "s3cr3t"),
            "PBSAPIToken=operator@pbs!homelab:s3cr3t"
        );
    }

    #[test]
    fn error_bodies_are_plain_text() {
        assert_eq!(
            error_message(b"no such datastore 'nosuch'", "Bad Request"),
            "no such datastore 'nosuch'"
        );
        assert_eq!(error_message(b"", "Bad Request"), "Bad Request");
        assert_eq!(error_message(br#"{"message":"proxy says no\n"}"#, "x"), "proxy says no");
    }

    #[test]
    fn upids_have_a_task_id_and_escaped_worker_ids() {
        let u = PbsUpid::parse("UPID:pbs:00000A1B:0001C2D3:00000009:6651B2C0:verificationjob:store1\\x3av\\x2dnightly:root@pam:").unwrap();
        assert_eq!((u.node.as_str(), u.worker_type.as_str()), ("pbs", "verificationjob"));
        assert_eq!(u.worker_id, "store1:v-nightly");
        assert_eq!(u.starttime, 0x6651B2C0);
        // A PVE UPID has one field fewer.
        assert!(PbsUpid::parse("UPID:pve1:0003F2A1:01B3C4D5:6650F1A2:qmstart:101:root@pam:").is_none());
        assert_eq!(systemd_escape("store1:v-nightly"), "store1\\x3av\\x2dnightly");
        assert_eq!(systemd_unescape(&systemd_escape("store1:a/b-c")), "store1:a/b-c");
    }

    #[test]
    fn fields_compare_as_form_values() {
        assert_eq!(field_as_param(&serde_json::json!(true)).as_deref(), Some("true"));
        assert_eq!(field_as_param(&serde_json::json!(7)).as_deref(), Some("7"));
        assert!(exit_ok("WARNINGS: 2") && !exit_ok("Start GC failed - (already running/locked)"));
    }
}
