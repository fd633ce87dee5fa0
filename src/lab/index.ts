// The lab's API for the rest of tenguard (NIC agent, vSwitch, orchestrator, tests):
// build, load, inspect and remove labs, and run commands on their nodes.

export { listNamespaces, namespaceExists } from '../util/netns.js';
export {
  type BuildOptions,
  type BuildProgress,
  buildLab,
  type DestroyReport,
  destroyLab,
  findLabObjects,
  type LabObjects,
  loadLab,
} from './build.js';
export {
  belongsToLab,
  DEFAULT_PREFIX,
  type FabricPlan,
  type HostPlan,
  LAB_LIMITS,
  LAB_MTU,
  LAB_MTU_RANGE,
  LAB_RANGES,
  type LabPlan,
  type LabSize,
  nodeNamespace,
  PREFIX_RE,
  planInterfaces,
  planLab,
  planNamespaces,
  planNodes,
  stateFilePath,
  type TenantPlan,
  validateLabMtu,
  validatePrefix,
  validateSize,
  type WorkloadPlan,
} from './plan.js';
export {
  type IperfResult,
  inRange,
  iperfTcp,
  iperfTcpNs,
  type PingResult,
  ping,
  rootFootprint,
} from './probe.js';
export { labNodes, liveNodeNs, nodeNs, runInNode, runInNodeOk, spawnInNode } from './run.js';
export { type LabState, planOf } from './state.js';
export { type LabCondition, type LabStatus, labStatus } from './status.js';
