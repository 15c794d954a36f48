//! Observation: finding our guest in the bulk snapshot, reading its config,
//! firewall and addresses.

use super::*;

/// Refresh the guest's addresses when its config was read (or none are known
/// yet) and its agent can answer; `Some` is when to come back for them.
pub(super) async fn observe_addresses<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    uid: &str,
    g: &ObservedGuest,
    status: &mut ProxmoxGuestStatus,
) -> Option<Duration> {
    if !g.running {
        status.ips.clear();
        status.interfaces.clear();
        return None;
    }
    let unknown = status.ips.is_empty();
    if g.config.is_none() && !unknown {
        return None;
    }
    let kind = kind_of(g.guest_type);
    // Containers answer from the host at once; a VM's agent starts with its OS.
    let grace = if kind == GuestKind::Qemu {
        ctx.api.agent_boot_grace()
    } else {
        Duration::ZERO
    };
    let uptime = g.uptime + ctx.cache.snapshot_age(ctx.cluster).await;
    let wait = ctx.cache.agent.wait(uid, uptime, grace);
    if !wait.is_zero() {
        return unknown.then_some(wait);
    }
    let nics = match ctx.api.guest_interfaces(&g.node, kind, g.vmid).await {
        Ok(nics) => nics,
        // Still booting: ask again later, without calling it an error.
        Err(e) if e.is_agent_not_running() => return unknown.then(|| ctx.cache.agent.pause(uid)),
        Err(_) => return None,
    };
    if nics.iter().all(|n| n.ips.is_empty()) {
        // Up, but no lease yet.
        return unknown.then(|| ctx.cache.agent.pause(uid));
    }
    ctx.cache.agent.answered(uid);
    // Without a fresh config, the slots keep the MACs seen before.
    let cfg = match &g.config {
        Some(c) => c.clone(),
        None => addresses::config_from(&status.interfaces),
    };
    status.ips = nics.iter().flat_map(|n| n.ips.iter().cloned()).collect();
    status.interfaces = addresses::interfaces(&cfg, &nics);
    None
}

pub(super) enum Identified {
    Ours(ObservedGuest),
    Foreign(ObservedGuest),
    None,
}

pub fn observed_from(r: &ClusterResource, guest_type: GuestType) -> ObservedGuest {
    ObservedGuest {
        vmid: r.vmid as u32,
        node: r.node.clone(),
        guest_type: match GuestKind::from_resource_type(&r.kind) {
            Some(GuestKind::Lxc) => GuestType::Lxc,
            Some(GuestKind::Qemu) => GuestType::Qemu,
            None => guest_type,
        },
        running: r.status.as_deref() == Some("running"),
        uptime: Duration::from_secs(r.uptime.unwrap_or(0)),
        lock: r.lock.clone(),
        tags: r.tag_list(),
        config: None,
        firewall: None,
    }
}

pub(super) async fn identify<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    id: &Identity,
    spec: &ProxmoxGuestSpec,
    status: &ProxmoxGuestStatus,
    resources: &[ClusterResource],
) -> Result<Identified, ReconcileError> {
    let guests = || resources.iter().filter(|r| !r.template);
    if let Some(r) = guests().find(|r| id.has_tag(&r.tag_list())) {
        if let Some(v) = spec.vmid.filter(|v| u64::from(*v) != r.vmid) {
            // Two resources with one name, or a mark copied by hand: never act on the wrong guest.
            return Err(ReconcileError::Config(format!(
                "spec.vmid is {v}, but VMID {} carries this resource's mark ({}); set vmid: {} if that is the guest, \
                 or rename this resource if another one (of the same namespace and name) manages VMID {}",
                r.vmid,
                id.mark_tag(),
                r.vmid,
                r.vmid
            )));
        }
        return Ok(Identified::Ours(observed_from(r, spec.guest_type)));
    }
    let hint = spec.vmid.or(status.vmid);
    let candidate = match hint {
        Some(v) => resources.iter().find(|r| r.vmid == v as u64),
        None if spec.adopt => {
            let named: Vec<_> = guests().filter(|r| r.name.as_deref() == Some(spec.name.as_str())).collect();
            if named.len() == 1 { Some(named[0]) } else { None }
        }
        None => None,
    };
    let Some(r) = candidate else {
        return Ok(Identified::None);
    };
    let mut g = observed_from(r, spec.guest_type);
    if r.template {
        return Ok(Identified::Foreign(g));
    }
    if r.lock.as_deref().is_some_and(|l| l == "clone" || l == "create") {
        // Being created right now: only we record a VMID before creating with it.
        if status.vmid == Some(g.vmid) {
            return Ok(Identified::Ours(g));
        }
    }
    // A clone carries our description line before its first config write adds the tag.
    let cfg = read_config(ctx.api, &g).await?;
    let ours = cfg.effective("description").is_some_and(|d| id.in_description(d));
    g.config = Some(cfg);
    if ours || spec.adopt {
        Ok(Identified::Ours(g))
    } else {
        Ok(Identified::Foreign(g))
    }
}

pub async fn read_config<P: PveApi>(api: &P, g: &ObservedGuest) -> Result<ObservedConfig, ReconcileError> {
    let entries = api
        .pending(&g.node, kind_of(g.guest_type), g.vmid)
        .await
        .map_err(|e| ReconcileError::pve("reading guest config", e))?;
    let mut cfg = ObservedConfig::default();
    for e in entries {
        if let Some(v) = &e.value {
            cfg.current.insert(e.key.clone(), pve::codec::value_to_string(v));
        }
        if let Some(p) = &e.pending {
            cfg.pending.insert(e.key.clone(), pve::codec::value_to_string(p));
        }
        if e.delete {
            cfg.pending_delete.insert(e.key.clone());
        }
    }
    Ok(cfg)
}

pub async fn read_firewall<P: PveApi>(api: &P, g: &ObservedGuest) -> Result<ObservedFirewall, ReconcileError> {
    let k = kind_of(g.guest_type);
    let options = api
        .firewall_options(&g.node, k, g.vmid)
        .await
        .map_err(|e| ReconcileError::pve("reading firewall options", e))?;
    let mut rules = api
        .firewall_rules(&g.node, k, g.vmid)
        .await
        .map_err(|e| ReconcileError::pve("reading firewall rules", e))?;
    rules.sort_by_key(|r| r.pos);
    Ok(ObservedFirewall { options, rules })
}
