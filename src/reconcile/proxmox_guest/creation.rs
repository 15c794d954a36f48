//! What a new guest needs before it can be created: its source, a node, and
//! the node having what the spec references.

use super::*;

pub(super) fn resolve_source(spec: &ProxmoxGuestSpec, resources: &[ClusterResource]) -> Result<ResolvedSource, Blocked> {
    if let Some(c) = &spec.source.clone {
        let templates: Vec<&ClusterResource> = resources
            .iter()
            .filter(|r| r.template && r.kind == spec.guest_type.as_str())
            .filter(|r| match (&c.template_vmid, &c.template_name) {
                (Some(v), _) => r.vmid == *v as u64,
                (None, Some(n)) => r.name.as_deref() == Some(n.as_str()),
                _ => false,
            })
            .collect();
        let what = c.template_vmid.map_or_else(
            || format!("named {:?}", c.template_name.clone().unwrap_or_default()),
            |v| v.to_string(),
        );
        return match templates.as_slice() {
            [t] => Ok(ResolvedSource::Clone {
                template_node: t.node.clone(),
                template_vmid: t.vmid as u32,
            }),
            [] => Err(Blocked {
                reason: "TemplateNotFound",
                message: format!("no {} template {what} in the cluster; check source.clone", spec.guest_type.as_str()),
            }),
            _ => Err(Blocked {
                reason: "TemplateAmbiguous",
                message: format!("several templates {what}; use source.clone.templateVmid"),
            }),
        };
    }
    if let Some(t) = &spec.source.os_template {
        return Ok(ResolvedSource::OsTemplate(t.clone()));
    }
    if let Some(i) = &spec.source.iso {
        return Ok(ResolvedSource::Iso(i.image.clone()));
    }
    Err(Blocked {
        reason: "InvalidSource",
        message: "source needs one of clone, osTemplate, iso".into(),
    })
}

/// Whether the node has what the spec references; `Some` names what is missing.
pub(super) async fn check_references<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    node: &str,
    source: &ResolvedSource,
) -> Result<Option<Blocked>, ReconcileError> {
    let refs = references::references(spec, source);
    let inventory = ctx
        .cache
        .inventory
        .node(ctx.cluster, node, ctx.api, &refs.listings())
        .await
        .map_err(|e| ReconcileError::pve(format!("listing storages and bridges of node {node}"), e))?;
    let missing = references::missing(node, &refs, &inventory);
    if !missing.is_empty() {
        ctx.cache.inventory.forget(ctx.cluster, node).await;
        return Ok(Some(Blocked {
            reason: "MissingReference",
            message: format!("{}; fix the spec or add them on the node", missing.join("; ")),
        }));
    }
    let ResolvedSource::Clone {
        template_node,
        template_vmid,
    } = source
    else {
        return Ok(None);
    };
    let shrunk = references::shrunk_by_clone(spec, &template_config(ctx, template_node, *template_vmid).await?);
    Ok((!shrunk.is_empty()).then(|| Blocked {
        reason: "DiskShrinkRefused",
        message: format!("{}; nothing was cloned", shrunk.join("; ")),
    }))
}

/// A template's config, key → value (one read, only when a clone is about to be made).
async fn template_config<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    node: &str,
    vmid: u32,
) -> Result<std::collections::BTreeMap<String, String>, ReconcileError> {
    let entries = ctx
        .api
        .pending(node, pve::GuestKind::Qemu, vmid)
        .await
        .map_err(|e| ReconcileError::pve(format!("reading template {vmid}"), e))?;
    Ok(entries
        .into_iter()
        .filter_map(|e| Some((e.key, pve::codec::value_to_string(&e.value?))))
        .collect())
}

/// The fixed node, or the online allowed node with the most free memory,
/// counting the guests this process placed moments ago (a batch created at
/// once spreads instead of piling onto one node).
pub(super) async fn choose_node<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    uid: &str,
    spec: &ProxmoxGuestSpec,
    source: Option<&ResolvedSource>,
) -> Result<Result<String, Blocked>, ReconcileError> {
    let nodes = ctx.api.nodes().await.map_err(|e| ReconcileError::pve("listing nodes", e))?;
    if let Some(n) = &spec.node {
        return Ok(match nodes.iter().any(|i| &i.node == n) {
            true => Ok(n.clone()),
            false => Err(Blocked {
                reason: "NodeNotFound",
                message: format!(
                    "node '{n}' is not in the cluster (it has {}); fix spec.node",
                    nodes.iter().map(|i| i.node.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
        });
    }
    let placed = ctx.cache.placements_besides(ctx.cluster, uid);
    let free = |n: &pve::NodeInfo| n.free_memory().saturating_sub(placed.get(&n.node).copied().unwrap_or(0));
    let best = nodes
        .iter()
        .filter(|n| n.status == "online")
        .filter(|n| spec.allowed_nodes.is_empty() || spec.allowed_nodes.contains(&n.node))
        .max_by_key(|n| (free(n), std::cmp::Reverse(n.node.clone())));
    Ok(match best {
        Some(n) => Ok(n.node.clone()),
        None => Err(Blocked {
            reason: "NoNodeAvailable",
            message: match source {
                _ if spec.allowed_nodes.is_empty() => "no online node in the cluster".into(),
                _ => format!("none of allowedNodes {:?} is online", spec.allowed_nodes),
            },
        }),
    })
}

/// What a guest that does not exist yet is made from and where.
#[derive(Default)]
pub(super) struct CreationInputs {
    pub source: Option<ResolvedSource>,
    pub node: Option<String>,
    /// Why it cannot be created (a person must act).
    pub blocked: Option<Blocked>,
}

/// Source and node for a guest that does not exist yet (`blocked` when
/// either cannot be had). Read-only.
pub(super) async fn place<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    uid: &str,
    spec: &ProxmoxGuestSpec,
    resources: &[ClusterResource],
    status: &ProxmoxGuestStatus,
) -> Result<CreationInputs, ReconcileError> {
    if let Some(v) = status.vmid {
        ctx.cache.reserve(ctx.cluster, v);
    }
    if spec.mode != ManagementMode::Reconcile || (spec.adopt && spec.vmid.is_some()) {
        return Ok(CreationInputs::default());
    }
    let source = match resolve_source(spec, resources) {
        Ok(s) => s,
        Err(b) => {
            return Ok(CreationInputs {
                blocked: Some(b),
                ..Default::default()
            });
        }
    };
    let (node, blocked) = match choose_node(ctx, uid, spec, Some(&source)).await? {
        Ok(n) => (Some(n), None),
        Err(b) => (None, Some(b)),
    };
    Ok(CreationInputs {
        source: Some(source),
        node,
        blocked,
    })
}

/// Every reference of the spec checked on the chosen node (`blocked` names what is missing).
pub(super) async fn checked<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    mut inputs: CreationInputs,
) -> Result<CreationInputs, ReconcileError> {
    if let (None, Some(node), Some(source)) = (&inputs.blocked, &inputs.node, &inputs.source) {
        inputs.blocked = check_references(ctx, spec, node, source).await?;
    }
    Ok(inputs)
}

/// Count the new guest's memory against its node at once, so a batch
/// placed at the same moment spreads over the nodes.
pub(super) fn hold_node<P: PveApi>(ctx: &GuestCtx<'_, P>, uid: &str, spec: &ProxmoxGuestSpec, inputs: &CreationInputs) {
    if let (None, Some(node), None) = (&inputs.blocked, &inputs.node, &spec.node) {
        ctx.cache.record_placement(ctx.cluster, uid, node, (spec.memory_mib as u64) << 20);
    }
}

/// A VMID for the new guest, which stays ours across failed attempts (it is
/// in status) and is saved before the create call.
pub(super) async fn claim_vmid<P: PveApi, S: StatusSink<ProxmoxGuestStatus> + ?Sized>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    resources: &[ClusterResource],
    status: &mut ProxmoxGuestStatus,
    sink: &S,
) -> Result<(), ReconcileError> {
    if status.vmid.is_none() && spec.vmid.is_none() {
        let vmid = ctx
            .cache
            .allocate_vmid(ctx.cluster, ctx.api, resources)
            .await
            .map_err(|e| ReconcileError::pve("allocating a VMID", e))?;
        status.vmid = Some(vmid);
        // Recorded before the create call: a restart finds the guest by this VMID.
        sink.save(status).await.map_err(ReconcileError::Status)?;
    }
    Ok(())
}
