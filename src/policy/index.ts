// Zero-trust policy, connection tracking and flow logs (DESIGN.md section 6):
//   model.ts      the policy document and its schema (semantics written there)
//   normalize.ts  field checks, canonical rules          validate.ts  references, shadowed and conflicting rules
//   compile.ts    rules -> per-packet decision structure decide.ts    verdict of a new connection
//   selftest.ts   the document's built-in tests          store.ts     policies in force, atomic replace
//   directory.ts  workload identities (tenant, name, labels)
//   packet.ts     header parsing                         tcp.ts       TCP state machine
//   states.ts     connection states and timeouts         conntrack.ts the per-zone connection table
//   engine.ts     PolicyEngine.check(): the entry point  hook.ts      adapter to the NIC's forwarder
//   flowlog.ts    flow records: JSON lines, query, live  metrics.ts   Prometheus counters
export { type Cidr, parseCidrStrict } from './address.js';
export { CompiledPolicy, RuleNames } from './compile.js';
export { Decision, decide, SCOPE_BOTH, SCOPE_EGRESS, SCOPE_INGRESS } from './decide.js';
export { WorkloadDirectory, type WorkloadInfo } from './directory.js';
export {
  type CheckReason,
  CheckResult,
  type Direction,
  type EngineOptions,
  engineOptionsSchema,
  PolicyEngine,
  type WorkloadArg,
  Zone,
  ZoneCounters,
} from './engine.js';
export { FlowLog, type FlowLogOptions, type FlowQuery, type FlowRecord, parseSince } from './flowlog.js';
export {
  createPolicyHook,
  directionOf,
  type HookPacket,
  type HookWorkload,
  type PolicyHookFn,
} from './hook.js';
export { registerPolicyMetrics } from './metrics.js';
export { type PolicyDocument, type PolicyIssue, policyDocumentSchema } from './model.js';
export { type PolicyAccepted, PolicyRejectedError, type PolicyReport, PolicyStore } from './store.js';
export { validateDocument } from './validate.js';
