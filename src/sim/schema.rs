//! Request checks against the published PVE parameter schema, read at run time
//! from `tests/data/pve-api-subset.json` (AGPL data, never compiled in).
//! Error texts are the server's (pve-common JSONSchema.pm).

use std::{collections::BTreeMap, path::Path};

use regex::Regex;
use serde_json::Value;

pub struct Endpoint {
    pub method: String,
    pub template: String,
    segments: Vec<String>,
    pub returns_task: bool,
    pub parameters: Value,
}

pub struct PveSchema {
    pub endpoints: Vec<Endpoint>,
}

/// A matched route: the endpoint and its path parameters.
pub struct RouteMatch<'a> {
    pub endpoint: &'a Endpoint,
    pub path_params: BTreeMap<String, String>,
}

impl PveSchema {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let endpoints = v["endpoints"]
            .as_array()
            .ok_or("no endpoints array")?
            .iter()
            .map(|e| {
                let template = e["path"].as_str().unwrap_or_default().to_string();
                Endpoint {
                    method: e["method"].as_str().unwrap_or_default().to_string(),
                    segments: template.split('/').map(str::to_string).collect(),
                    template,
                    returns_task: e["returns_task_upid"] == "always",
                    parameters: e["parameters"].clone(),
                }
            })
            .collect();
        Ok(Self { endpoints })
    }

    /// The schema file shipped in the repository, if this checkout has it.
    pub fn from_repository() -> Result<Self, String> {
        Self::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pve-api-subset.json"))
    }

    /// Match by path first; a known path with an unknown method is a 501.
    pub fn route(&self, method: &str, path: &str) -> Result<RouteMatch<'_>, bool> {
        let segs: Vec<&str> = path.split('/').collect();
        let mut path_known = false;
        for e in &self.endpoints {
            if e.segments.len() != segs.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let ok = e.segments.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    params.insert(t[1..t.len() - 1].to_string(), percent_decode(s));
                    !s.is_empty()
                } else {
                    t == s
                }
            });
            if ok {
                path_known = true;
                if e.method == method {
                    return Ok(RouteMatch {
                        endpoint: e,
                        path_params: params,
                    });
                }
            }
        }
        Err(path_known)
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Which server's value rules apply: PVE takes booleans as 0/1 only; PBS
/// (proxmox-schema) also takes true/false, yes/no, on/off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Pve,
    Pbs,
}

/// Check all parameters (path + query/body) of a request. Returns the
/// `errors` map of a 400 "Parameter verification failed." answer.
pub fn check_params(schema: &Value, params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    check_params_as(Dialect::Pve, schema, params)
}

pub fn check_params_as(dialect: Dialect, schema: &Value, params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut errors = BTreeMap::new();
    let props = schema["properties"].as_object().cloned().unwrap_or_default();
    for (name, value) in params {
        match lookup_property(&props, name) {
            Some(p) => {
                if let Err(e) = check_value(dialect, p, value) {
                    errors.insert(name.clone(), e);
                }
            }
            None => {
                errors.insert(
                    name.clone(),
                    "property is not defined in schema and the schema does not allow additional properties".into(),
                );
            }
        }
    }
    for (name, p) in &props {
        if name.ends_with("[n]") || p["optional"] == 1 || p["optional"] == true {
            continue;
        }
        if !params.contains_key(name) {
            errors.insert(name.clone(), "property is missing and it is not optional".into());
        }
    }
    errors
}

/// `net0` finds `net[n]`.
fn lookup_property<'a>(props: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(p) = props.get(name) {
        return Some(p);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < name.len() {
        return props.get(&format!("{base}[n]"));
    }
    None
}

fn check_value(dialect: Dialect, p: &Value, value: &str) -> Result<(), String> {
    let boolean = |v: &str| match dialect {
        Dialect::Pve => v == "0" || v == "1",
        Dialect::Pbs => matches!(
            v.to_ascii_lowercase().as_str(),
            "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off"
        ),
    };
    match p["type"].as_str().unwrap_or("string") {
        // Repeated form keys arrive joined by NUL; each element is checked against `items`.
        "array" => {
            return value
                .split('\0')
                .filter(|v| !v.is_empty())
                .try_for_each(|v| check_value(dialect, &p["items"], v));
        }
        "boolean" => {
            if !boolean(value) {
                return Err(format!("type check ('boolean') failed - got '{value}'"));
            }
        }
        "integer" => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("type check ('integer') failed - got '{value}'"))?;
            check_range(p, n as f64)?;
        }
        "number" => {
            let n: f64 = value.parse().map_err(|_| format!("type check ('number') failed - got '{value}'"))?;
            check_range(p, n)?;
        }
        _ => {
            if let Some(max) = num(&p["maxLength"])
                && value.chars().count() as f64 > max
            {
                return Err(format!("value may only be {max} characters long"));
            }
            if let Some(min) = num(&p["minLength"])
                && (value.chars().count() as f64) < min
            {
                return Err(format!("value must be at least {min} characters long"));
            }
        }
    }
    if let Some(options) = p["enum"].as_array()
        && !options.iter().any(|o| o.as_str() == Some(value))
    {
        let list: Vec<&str> = options.iter().filter_map(|o| o.as_str()).collect();
        return Err(format!(
            "value '{value}' does not have a value in the enumeration '{}'",
            list.join(", ")
        ));
    }
    if let Some(pattern) = p["pattern"].as_str()
        && let Some(re) = perl_regex(pattern)
        && !re.is_match(value)
    {
        return Err("value does not match the regex pattern".into());
    }
    match &p["format"] {
        Value::Object(fmt) => check_property_string(dialect, fmt, value),
        Value::String(name) => check_named_format(name, value).map_err(|e| format!("invalid format - {e}")),
        _ => Ok(()),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn check_range(p: &Value, n: f64) -> Result<(), String> {
    if let Some(min) = num(&p["minimum"])
        && n < min
    {
        return Err(format!("value must have a minimum value of {min}"));
    }
    if let Some(max) = num(&p["maximum"])
        && n > max
    {
        return Err(format!("value must have a maximum value of {max}"));
    }
    Ok(())
}

/// Perl patterns from the schema, anchored the way JSONSchema.pm applies them.
fn perl_regex(pattern: &str) -> Option<Regex> {
    let p = pattern.replace("(?^:", "(?:").replace("{,", "{0,");
    let p = p.strip_prefix('/').and_then(|p| p.strip_suffix('/')).unwrap_or(&p);
    Regex::new(&format!("^(?:{p})$")).ok()
}

/// `key=value,...` checked key by key against the format object.
fn check_property_string(dialect: Dialect, fmt: &serde_json::Map<String, Value>, value: &str) -> Result<(), String> {
    let default_key = fmt
        .iter()
        .find(|(_, d)| d["default_key"] == 1 || d["default_key"] == true)
        .map(|(k, _)| k.clone());
    let mut seen = BTreeMap::new();
    for part in value.split(',').filter(|s| !s.is_empty()) {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match &default_key {
                Some(dk) => (dk.clone(), part.to_string()),
                None => {
                    return Err(format!(
                        "invalid format - value without key, but schema does not define a default key: {part}"
                    ));
                }
            },
        };
        let Some(def) = fmt.get(&key) else {
            return Err(format!(
                "invalid format - property {key}: property is not defined in schema and the schema does not allow additional properties"
            ));
        };
        // `virtio=MAC`: the key is a value of `keyAlias` (model) and the value goes to `alias` (macaddr).
        let (key, def) = match (def["keyAlias"].as_str(), def["alias"].as_str()) {
            (Some(key_alias), Some(alias)) => {
                if let Some(kdef) = fmt.get(key_alias) {
                    check_value(dialect, kdef, &key).map_err(|e| format!("invalid format - property {key_alias}: {e}"))?;
                }
                if seen.insert(key_alias.to_string(), ()).is_some() {
                    return Err(format!(
                        "invalid format - property {key_alias}: duplicate key in comma-separated list property"
                    ));
                }
                (alias.to_string(), fmt.get(alias).unwrap_or(def))
            }
            (None, Some(alias)) => (alias.to_string(), fmt.get(alias).unwrap_or(def)),
            _ => (key, def),
        };
        if seen.insert(key.clone(), ()).is_some() {
            return Err(format!(
                "invalid format - property {key}: duplicate key in comma-separated list property"
            ));
        }
        check_value(dialect, def, &val).map_err(|e| format!("invalid format - property {key}: {e}"))?;
    }
    for (k, d) in fmt {
        let optional = d["optional"] == 1 || d["optional"] == true || d.get("alias").is_some() || d.get("default").is_some();
        if !optional && !seen.contains_key(k) {
            return Err(format!("invalid format - property {k}: property is missing and it is not optional"));
        }
    }
    Ok(())
}

/// The named formats the simulator checks as PVE's JSONSchema.pm does (and
/// `-list` of each); a test walks the schema's named formats and holds every
/// other one to a reason it is not checked here.
pub const NAMED_FORMATS: &[&str] = &[
    "pve-node",
    "pve-vmid",
    "pve-storage-id",
    "pve-configid",
    "pve-tag",
    "pve-poolid",
    "mac-addr",
    "mac-prefix",
    "disk-size",
    "urlencoded",
    "dns-name",
    "ipv4",
    "ipv6",
    "address",
    "CIDR",
    "pve-bridge-id",
    "pve-iface",
    "pve-qm-ipconfig",
    "pve-ipv4-config",
    "pve-ipv6-config",
    "lxc-ip-with-ll-iface",
    "pve-startup-order",
    "pve-volume-id",
    "pve-volume-id-or-qm-path",
    "pve-volume-id-or-absolute-path",
    "pve-calendar-event",
    "pve-day-of-week",
    "email",
    "email-opt",
    "email-or-username",
    "pve-cpuset",
    "pve-realm",
    "pve-storage-content",
    "pve-task-status-type",
];

fn re(p: &str) -> Regex {
    Regex::new(p).expect("static regex")
}

/// One value of a named format (`-list` formats split first): PVE's check, or `None` for a name not checked here.
fn named_format_ok(n: &str, v: &str) -> Option<bool> {
    let ip = |v: &str| v.parse::<std::net::IpAddr>().is_ok();
    let volume = |v: &str| re(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]:.+$").is_match(v);
    Some(match n {
        "pve-node" => re(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$").is_match(v),
        "pve-vmid" => re(r"^[1-9][0-9]{2,8}$").is_match(v),
        "pve-storage-id" => v.len() >= 2 && re(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$").is_match(v),
        "pve-configid" => re(r"(?i)^[a-z][a-z0-9_-]+$").is_match(v),
        "pve-tag" => re(r"(?i)^[a-z0-9_][a-z0-9_\-+.]*$").is_match(v),
        "pve-poolid" => re(r"^[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+){0,2}$").is_match(v),
        "mac-addr" => re(r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$").is_match(v),
        "mac-prefix" => re(r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){0,2}:?$").is_match(v),
        "disk-size" => re(r"^(\d+(\.\d+)?)([KMGT](?:iB)?)?$").is_match(v),
        "urlencoded" => re(r"^[-%a-zA-Z0-9_.!~*'()]*$").is_match(v),
        "dns-name" => re(r"^(?i)([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.([a-z0-9]([a-z0-9-]*[a-z0-9])?))*$").is_match(v),
        "ipv4" => v.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => v.parse::<std::net::Ipv6Addr>().is_ok(),
        "address" => ip(v),
        "CIDR" => cidr::<std::net::Ipv4Addr>(v) || cidr::<std::net::Ipv6Addr>(v),
        "pve-bridge-id" => re(r"^[-_.\w\d]+$").is_match(v),
        "pve-iface" => re(r"^[a-zA-Z][a-zA-Z0-9_]{1,20}([:.]\d+)?$").is_match(v),
        "pve-qm-ipconfig" => check_ipconfig(v).is_ok(),
        "pve-ipv4-config" => v == "dhcp" || v == "manual" || cidr::<std::net::Ipv4Addr>(v),
        "pve-ipv6-config" => ["dhcp", "auto", "manual"].contains(&v) || cidr::<std::net::Ipv6Addr>(v),
        "lxc-ip-with-ll-iface" => ip(v.split('%').next().unwrap_or_default()),
        "pve-startup-order" => re(r"^((order=)?\d+)?(,?(up|down)=\d+)*$").is_match(v.trim_start_matches(',')),
        "pve-volume-id" => volume(v),
        "pve-volume-id-or-qm-path" => volume(v) || v.starts_with('/') || v == "none" || v == "cdrom",
        "pve-volume-id-or-absolute-path" => volume(v) || v.starts_with('/'),
        "pve-calendar-event" => re(
            r"(?i)^(minutely|hourly|daily|weekly|monthly|yearly|annually|quarterly|semiannually|((mon|tue|wed|thu|fri|sat|sun)((\.\.|,)(mon|tue|wed|thu|fri|sat|sun))*)?( *[0-9*/.,:-]+)*)$",
        )
        .is_match(v.trim()) && !v.trim().is_empty(),
        "pve-day-of-week" => ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].contains(&v),
        "email" => re(r"^[^\s@]+@[^\s@]+\.[^\s@]+$").is_match(v),
        "email-opt" => v.is_empty() || re(r"^[^\s@]+@[^\s@]+\.[^\s@]+$").is_match(v),
        "email-or-username" => re(r"^[^\s@:]+(@[^\s@:]+)?$").is_match(v),
        "pve-cpuset" => re(r"^\d+(-\d+)?(,\d+(-\d+)?)*$").is_match(v),
        "pve-realm" => re(r"^[A-Za-z][A-Za-z0-9.\-_]+$").is_match(v),
        "pve-storage-content" => ["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"].contains(&v),
        "pve-task-status-type" => ["ok", "error", "warning", "unknown"].contains(&v),
        _ => return None,
    })
}

/// A named format's check: `invalid format - …` reasons as PVE words them.
pub fn check_named_format(name: &str, value: &str) -> Result<(), String> {
    let one = |n: &str, v: &str| match named_format_ok(n, v) {
        // PVE's calendar parser dies with its own words.
        Some(false) if n == "pve-calendar-event" => Err(format!("unable to parse calendar event - {v:?}")),
        Some(false) => Err(format!("value does not look like a valid {n}")),
        _ => Ok(()),
    };
    match name.strip_suffix("-list") {
        Some(base) => value
            .split([',', ';', ' ', '\0'])
            .filter(|s| !s.is_empty())
            .try_for_each(|v| one(base, v)),
        None => one(name, value),
    }
}

fn check_ipconfig(v: &str) -> Result<(), String> {
    for part in v.split(',').filter(|s| !s.is_empty()) {
        let Some((k, val)) = part.split_once('=') else {
            return Err(format!("bad item {part}"));
        };
        let ok = match k {
            "ip" => val == "dhcp" || cidr::<std::net::Ipv4Addr>(val),
            "ip6" => val == "dhcp" || val == "auto" || cidr::<std::net::Ipv6Addr>(val),
            "gw" => val.parse::<std::net::Ipv4Addr>().is_ok(),
            "gw6" => val.parse::<std::net::Ipv6Addr>().is_ok(),
            _ => false,
        };
        if !ok {
            return Err(format!("invalid {k}: {val}"));
        }
    }
    Ok(())
}

fn cidr<T: std::str::FromStr>(v: &str) -> bool {
    v.split_once('/')
        .is_some_and(|(a, p)| a.parse::<T>().is_ok() && p.parse::<u8>().is_ok())
}
