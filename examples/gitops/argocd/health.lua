-- Argo CD health check for ftso.dev/FaultTolerantService, built on the operator's conditions.
-- Install it under resource.customizations.health.ftso.dev_FaultTolerantService in argocd-cm.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local c = {}
for _, condition in ipairs(obj.status.conditions) do
  c[condition.type] = condition
end
if c.InvalidSpec ~= nil and c.InvalidSpec.status == "True" then
  hs.status = "Degraded"
  hs.message = c.InvalidSpec.message
  return hs
end
if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Paused"
  return hs
end
if c.Ready ~= nil and c.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = c.Ready.message
  return hs
end
if c.Available ~= nil and c.Available.status == "False" and c.Progressing ~= nil and c.Progressing.status == "False" then
  hs.status = "Degraded"
  hs.message = c.Available.message
  return hs
end
hs.status = "Progressing"
if c.Progressing ~= nil and c.Progressing.message ~= "" then
  hs.message = c.Progressing.message
elseif c.Ready ~= nil then
  hs.message = c.Ready.message
end
return hs
