-- ArgoCD health for every homelab.dev kind (they share the condition contract):
-- Healthy when Ready=True for the current generation, Progressing while the
-- operator works or has not seen the latest spec, Degraded on Stalled/Degraded.
local hs = {}
local function find(conds, t)
  for _, c in ipairs(conds) do
    if c.type == t then
      return c
    end
  end
  return nil
end
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
local conds = obj.status.conditions
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local stalled = find(conds, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end
local degraded = find(conds, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or degraded.reason or "Degraded"
  return hs
end
-- MonitorTarget (and a guest with spec.monitor): the target's health is its
-- own condition; a Down target degrades the app, a monitor without a result
-- yet is still progressing, a paused one is what its owner asked for.
local healthy = find(conds, "Healthy")
if healthy ~= nil and healthy.status == "False" and healthy.reason ~= "Paused" then
  if healthy.reason == "Down" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = "Target " .. (healthy.reason or "") .. ": " .. (healthy.message or "")
  return hs
end
local ready = find(conds, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
local reconciling = find(conds, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = reconciling.message or "Reconciling"
  return hs
end
hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = "Waiting for Ready"
end
return hs
