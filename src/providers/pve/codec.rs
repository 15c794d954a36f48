//! PVE wire quirks in one place: property strings (`key=value,...` with a
//! default key), 0/1 booleans, numbers that arrive as strings, UPIDs.

use std::collections::BTreeMap;

/// A parsed property string such as `virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10`.
/// Keys keep their order; a value without `key=` is stored under `default_key`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyString {
    pub items: Vec<(String, String)>,
}

impl PropertyString {
    pub fn parse(s: &str, default_key: &str) -> Self {
        let items = s
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|part| match part.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (default_key.to_string(), part.trim().to_string()),
            })
            .collect();
        Self { items }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.items.iter_mut().find(|(k, _)| k == key) {
            Some(item) => item.1 = value,
            None => self.items.push((key.to_string(), value)),
        }
    }

    pub fn to_map(&self) -> BTreeMap<&str, &str> {
        self.items.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// Encode; the item under `default_key` (if any) goes first, bare.
    pub fn encode(&self, default_key: Option<&str>) -> String {
        let mut out: Vec<String> = Vec::with_capacity(self.items.len());
        if let Some(dk) = default_key
            && let Some(v) = self.get(dk)
        {
            out.push(v.to_string());
        }
        for (k, v) in &self.items {
            if Some(k.as_str()) == default_key {
                continue;
            }
            out.push(format!("{k}={v}"));
        }
        out.join(",")
    }
}

/// PVE form-encoded booleans are exactly `1` or `0`.
pub fn bool01(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// Read a boolean that may be sent as 0/1 number, "0"/"1" string, `on`/`off` or a real boolean.
pub fn lenient_bool(v: &serde_json::Value) -> Option<bool> {
    match v {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::Number(n) => n.as_i64().map(|i| i != 0),
        serde_json::Value::String(s) => match s.as_str() {
            "1" | "on" | "yes" | "true" => Some(true),
            "0" | "off" | "no" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Read an integer sent as a number or as a string (`/cluster/nextid` answers `"101"`).
pub fn lenient_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Render any config value as the string PVE would accept back.
pub fn value_to_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Serde helpers for fields that may be numbers or strings.
pub mod de {
    use serde::{Deserialize, Deserializer};

    pub fn u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        super::lenient_u64(&v).ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {v}")))
    }

    pub fn opt_u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(v.as_ref().and_then(super::lenient_u64))
    }

    pub fn bool_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(v.as_ref().and_then(super::lenient_bool).unwrap_or(false))
    }

    pub fn opt_bool_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(v.as_ref().and_then(super::lenient_bool))
    }
}

/// Size strings (`32G`, `512M`, `1T`, bare bytes) in bytes.
pub fn parse_size_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let n: f64 = num.parse().ok()?;
    let mul: u64 = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((n * mul as f64) as u64)
}

/// A decoded UPID: `UPID:{node}:{pid}:{pstart}:{starttime}:{type}:{id}:{user}:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upid {
    pub raw: String,
    pub node: String,
    pub task_type: String,
    pub id: String,
    pub starttime: u64,
}

impl Upid {
    pub fn parse(s: &str) -> Option<Upid> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 9 || parts[0] != "UPID" || !parts[8].is_empty() || parts[1].is_empty() {
            return None;
        }
        Some(Upid {
            raw: s.to_string(),
            node: parts[1].to_string(),
            starttime: u64::from_str_radix(parts[4], 16).ok()?,
            task_type: parts[5].to_string(),
            id: parts[6].to_string(),
        })
    }
}

/// Percent-encode as PVE's `urlencoded` format wants (used for `sshkeys`).
pub fn pve_urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn pve_urldecode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `prune-backups` as `key → count`, from either spelling PVE uses: the
/// object of strings it answers with, or the property string it is sent.
pub fn prune_backups(v: &serde_json::Value) -> BTreeMap<String, u64> {
    match v {
        serde_json::Value::Object(m) => m.iter().filter_map(|(k, v)| Some((k.clone(), lenient_u64(v)?))).collect(),
        serde_json::Value::String(s) => PropertyString::parse(s, "keep-all")
            .items
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_string_round_trip_with_default_key() {
        let p = PropertyString::parse("virtio=BC:24:11:5E:7A:01,bridge=vmbr0,tag=10,firewall=1", "model");
        assert_eq!(p.get("virtio"), Some("BC:24:11:5E:7A:01"));
        assert_eq!(p.get("bridge"), Some("vmbr0"));
        let disk = PropertyString::parse("local-lvm:vm-100-disk-0,discard=on,size=32G", "file");
        assert_eq!(disk.get("file"), Some("local-lvm:vm-100-disk-0"));
        assert_eq!(disk.encode(Some("file")), "local-lvm:vm-100-disk-0,discard=on,size=32G");
    }

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(parse_size_bytes("32G"), Some(32 << 30));
        assert_eq!(parse_size_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_size_bytes("1.5G"), Some(3 << 29));
        assert_eq!(lenient_u64(&serde_json::json!("101")), Some(101));
        assert_eq!(lenient_bool(&serde_json::json!(1)), Some(true));
    }

    #[test]
    fn upid_decodes() {
        let u = Upid::parse("UPID:pve1:0003F2A1:01B3C4D5:6650F1A2:qmstart:101:operator@pve!homelab:").unwrap();
        assert_eq!((u.node.as_str(), u.task_type.as_str(), u.id.as_str()), ("pve1", "qmstart", "101"));
        assert_eq!(u.starttime, 0x6650F1A2);
        assert!(Upid::parse("UPID:bad").is_none());
    }

    #[test]
    fn urlencoding_round_trips() {
        let k = "ssh-ed25519 AAAA admin@homelab\n";
        let e = pve_urlencode(k);
        assert_eq!(e, "ssh-ed25519%20AAAA%20admin%40homelab%0A");
        assert_eq!(pve_urldecode(&e), k);
    }
}
