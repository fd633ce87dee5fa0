// The demo from start to end: build the lab, start a NIC agent and a vSwitch daemon per host,
// start the control plane (the orchestrator as a child process), run the steps, and tear everything down again, also after a failure or
// an interrupt. Every claim is a check in the report; every long-running process the demo
// starts is tracked by pid and must be gone at the end.
import { existsSync, readdirSync } from 'node:fs';
import { LabAgents } from '../lab/agents.js';
import { LabCa } from '../lab/ca.js';
import { buildLab, destroyLab, findLabObjects, type LabState, loadLab } from '../lab/index.js';
import { UAPI_SOCKET_DIR } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import { apiRequest } from '../util/http-json.js';
import { podmanStep } from './cni-step.js';
import { consoleStep, keepUp } from './console-step.js';
import type { DemoControl } from './control.js';
import type { DemoReporter } from './report.js';
import { DemoSteps } from './steps.js';

export interface DemoOptions {
  prefix: string;
  iperfSeconds: number;
  /** Plain HTTP everywhere instead of mTLS. */
  insecure?: boolean;
  /** After the checks, keep the lab (and its web console) up until the signal aborts. */
  keep?: boolean;
  /** NICs per host (default 1); with several, a NIC failover step (steps.ts nicFailover). */
  nics?: number;
}

/** Kills the leading orchestrator replica mid-demo and checks that the other takes over. */
async function leaderTakeover(control: DemoControl, report: DemoReporter): Promise<void> {
  if (control.takeover === undefined) return;
  report.say('      the leading orchestrator replica is killed (SIGKILL); the other one must take over');
  const t = await control.takeover();
  report.figure('leader_takeover_ms', t.takeoverMs);
  report.check(
    'leader takeover: another orchestrator replica leads within 3 s of the leader being killed',
    t.takeoverMs <= 3000,
    `pid ${t.killedPid} killed; pid ${t.leaderPid} leads after ${t.takeoverMs} ms`,
  );
  report.check(
    'leader takeover: the new leader serves the same workloads',
    JSON.stringify(t.workloadsBefore) === JSON.stringify(t.workloadsAfter),
    `${t.workloadsAfter.length} workloads: ${t.workloadsAfter.join(', ')}`,
  );
}

/**
 * Steps shown as [n/N]: lab, agents, control plane, then the fourteen steps of DemoSteps, the
 * podman step (cni-step.ts), the web console (console-step.ts), then teardown.
 */
export const TOTAL_STEPS = 20;

/** The steps of a run: one more (the NIC failover) with several NICs per host. */
export function totalSteps(nics = 1): number {
  return TOTAL_STEPS + (nics > 1 ? 1 : 0);
}

/** Starts the control plane (the orchestrator) for the lab and its running agents. */
export type OrchestratorStarter = (lab: LabState, agents: LabAgents) => Promise<DemoControl>;

/** `kept`: the run ended by the signal while the lab was kept up (--keep), as it should. */
export async function runDemo(
  opts: DemoOptions,
  report: DemoReporter,
  signal: AbortSignal,
  startOrchestrator: OrchestratorStarter,
): Promise<{ kept: boolean }> {
  let kept = false;
  const { prefix } = opts;
  await clearLeftovers(prefix, report);
  let agents: LabAgents | null = null;
  let ca: LabCa | null = null;
  let control: DemoControl | null = null;
  let steps: DemoSteps | null = null;
  const pids: number[] = [];
  let ours = true;
  const t0 = performance.now();
  try {
    const nics = opts.nics ?? 1;
    report.step(
      nics > 1
        ? `lab: 2 hosts with ${nics} NICs each (host + NIC namespaces, PCIe veth per NIC), a fabric bridge, an outside namespace`
        : 'lab: 2 hosts (host + NIC namespaces, PCIe veth), a fabric bridge, an outside namespace',
    );
    const tl = performance.now();
    // No workload namespaces from the lab: the control plane creates each workload's own.
    const lab = await buildLab({
      prefix,
      hosts: 2,
      tenants: 1,
      workloads: 0,
      outside: true,
      signal,
      ...(nics > 1 ? { nics } : {}),
    });
    report.figure('lab_up_ms', Math.round(performance.now() - tl));
    report.check(
      'lab built',
      true,
      `prefix ${prefix}; ${lab.hosts.map((h) => `${h.name}: ${h.hostNs} <-> ${h.nicNs}`).join(', ')}; fabric ${lab.fabric.ns}`,
    );

    report.step('agents: a NIC agent in each NIC namespace, a vSwitch daemon in each host namespace');
    const ta = performance.now();
    if (opts.insecure === true)
      report.say('      INSECURE: --insecure: every API runs as plain HTTP without client authentication');
    else {
      ca = await LabCa.start(lab);
      report.result.security.mtls = true;
      report.result.security.trustDomain = ca.trustDomain;
      report.say(
        `      a CA for the lab (trust domain ${ca.trustDomain}, key in a SoftHSM2 token, CSR API on ${ca.socket}); every service enrols with a one-time join token`,
      );
    }
    agents = await LabAgents.start(lab, { logLevel: 'warn', ca: ca ?? undefined });
    report.figure('agents_up_ms', Math.round(performance.now() - ta));
    for (const h of lab.hosts) {
      const n = agents.nics.get(h.name)!;
      const v = agents.vswitchds.get(h.name)!;
      pids.push(n.pid, v.pid);
      report.check(
        `${h.name}: NIC agent and vSwitch daemon answer`,
        true,
        `nic pid ${n.pid} (${h.nicNs}), vswitchd pid ${v.pid} (${h.hostNs})`,
      );
    }

    await refusedWithoutCertificate(agents, lab, report);

    report.step('control plane');
    control = await startOrchestrator(lab, agents);
    pids.push(...control.pids());
    report.result.control = control.describe();
    report.check('control plane ready', true, control.describe());

    const s = new DemoSteps({ lab, agents, control, report, signal, pids, iperfSeconds: opts.iperfSeconds });
    steps = s;
    await s.tenants();
    await s.startCaptures();
    await s.createWorkloads();
    // A step that fails is reported and the next one runs; an interrupt ends the run.
    const phase = async (name: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        if (signal.aborted) throw err;
        report.check(`${name} step completed`, false, (err as Error).message);
      }
    };
    await phase('same-tenant traffic', () => s.sameTenant());
    await phase('IPv6', () => s.ipv6());
    await phase('cross-tenant traffic', () => s.crossTenant());
    await phase('service by name', () => s.serviceByName());
    await phase('egress allowed', () => s.egressAllowed());
    await phase('egress denied', () => s.egressDenied());
    await phase('captures', () => s.analyseCaptures());
    await phase('key inventory', () => s.keyInventory());
    await phase('throughput', () => s.throughput());
    await phase('migration', () => s.migrate());
    await phase('PSK scan after the migration', () => s.pskScan('the migration'));
    await phase('leader takeover', () => leaderTakeover(control!, report));
    if (nics > 1) await phase('NIC failover', () => s.nicFailover());
    await phase('killed vSwitch daemon', () => s.vswitchdRecovery());
    await phase('PSK scan after the re-adoption', () => s.pskScan("the vSwitch daemon's re-adoption"));
    await phase('spin-down', () => s.spinDown());
    await phase('podman', () =>
      podmanStep({ lab, control: control!, report, insecure: opts.insecure === true, ca: ca ?? undefined }),
    );
    let consoleUrl: string | null = null;
    await phase('web console', async () => {
      consoleUrl = await consoleStep(control!, report);
    });
    if (opts.keep === true && consoleUrl !== null && !signal.aborted) {
      await keepUp(control, consoleUrl, report, signal);
      kept = true;
    }
  } catch (err) {
    if (err instanceof TgError && err.code === 'TG_ERR_LAB_EXISTS') {
      ours = false;
      throw err;
    }
    report.check(
      'demo ran to the end',
      false,
      signal.aborted ? 'interrupted by a signal' : (err as Error).message,
    );
  } finally {
    report.result.pids = [...pids];
    if (ours)
      await tearDown(prefix, report, { agents, control, steps, pids, ca, totalSteps: totalSteps(opts.nics) });
    report.figure('total_ms', Math.round(performance.now() - t0));
  }
  return { kept };
}

async function tearDown(
  prefix: string,
  report: DemoReporter,
  parts: {
    agents: LabAgents | null;
    control: DemoControl | null;
    steps: DemoSteps | null;
    pids: number[];
    ca: LabCa | null;
    totalSteps: number;
  },
): Promise<void> {
  report.step('teardown: control plane, agents, lab', parts.totalSteps);
  const t0 = performance.now();
  const problems: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
    }
  };
  await attempt('captures', async () => parts.steps?.cleanup());
  await attempt('control plane', async () => parts.control?.close());
  await attempt('agents', async () => parts.agents?.stop());
  await attempt('CA', async () => parts.ca?.close());
  let runDir = '';
  await attempt('lab', async () => {
    try {
      runDir = loadLab(prefix).runDir;
    } catch {
      runDir = '';
    }
    await destroyLab(prefix);
  });
  report.figure('teardown_ms', Math.round(performance.now() - t0));
  const left = await findLabObjects(prefix);
  const alive = parts.pids.filter(processAlive);
  const sockets = leftoverSockets(prefix, runDir);
  const clean =
    problems.length === 0 &&
    left.namespaces.length === 0 &&
    left.links.length === 0 &&
    !left.stateFile &&
    alive.length === 0 &&
    sockets.length === 0;
  report.check(
    'teardown leaves nothing behind',
    clean,
    clean
      ? `${parts.pids.length} processes ended, no namespace, link, socket or state file of ${prefix} left`
      : [
          ...problems,
          ...left.namespaces.map((n) => `namespace ${n}`),
          ...left.links.map((l) => `link ${l}`),
          ...(left.stateFile ? ['state file'] : []),
          ...alive.map((p) => `pid ${p} still running`),
          ...sockets,
        ].join(', '),
  );
}

/**
 * Under mTLS, a NIC API call without a client certificate is refused (401 after the TLS
 * handshake), and so is plain HTTP on the same socket; without mTLS this is not shown.
 */
async function refusedWithoutCertificate(
  agents: LabAgents,
  lab: LabState,
  report: DemoReporter,
): Promise<void> {
  const h = lab.hosts[0];
  if (agents.ca === undefined) {
    report.result.notShown.push('NIC API refuses a client without a certificate: the run is --insecure');
    return;
  }
  const noCert = await apiRequest(
    agents.endpoint(h.nicApiSocket, agents.nicId(h.name), null),
    'POST',
    '/v1/workloads/any/psk',
  ).then(
    (r) => `HTTP ${r.status} ${(r.body as { code?: string }).code ?? ''}`.trim(),
    (err: Error) => `no answer: ${err.message}`,
  );
  const plain = await apiRequest(h.nicApiSocket, 'GET', '/v1/keys', undefined, { timeoutMs: 5000 }).then(
    (r) => `HTTP ${r.status}`,
    (err: Error) => `connection refused (${err.message.slice(0, 60)})`,
  );
  const withCert = await agents
    .nic(h.name)
    .health()
    .then(
      () => 'answered',
      (err: Error) => `failed: ${err.message}`,
    );
  report.check(
    `${h.name}: the NIC API refuses a call without a client certificate`,
    noCert.startsWith('HTTP 401') && !plain.startsWith('HTTP 2') && withCert === 'answered',
    `POST /v1/workloads/any/psk over TLS without a certificate: ${noCert}; plain HTTP GET /v1/keys: ${plain}; the operator's certificate (${agents.ca.operatorId}): ${withCert}`,
  );
}

/** Sockets of the prefix still on disk: the lab's run directory and UAPI sockets of its devices. */
function leftoverSockets(prefix: string, runDir: string): string[] {
  const out: string[] = [];
  if (runDir !== '' && existsSync(runDir)) out.push(`run directory ${runDir}`);
  let names: string[] = [];
  try {
    names = readdirSync(UAPI_SOCKET_DIR);
  } catch {
    names = [];
  }
  for (const f of names) if (f.startsWith(`${prefix}-`)) out.push(`${UAPI_SOCKET_DIR}/${f}`);
  return out;
}

/**
 * Removes what an earlier run left with this prefix (its process gone). A lab whose builder
 * still runs is someone else's: TG_ERR_LAB_EXISTS, and nothing is touched.
 */
async function clearLeftovers(prefix: string, report: DemoReporter): Promise<void> {
  const found = await findLabObjects(prefix);
  if (!found.stateFile && found.namespaces.length === 0 && found.links.length === 0) return;
  let old: LabState | null = null;
  try {
    old = loadLab(prefix);
  } catch {
    old = null;
  }
  if (old !== null && old.builder.pid !== process.pid && processAlive(old.builder.pid)) {
    throw new TgError(
      'TG_ERR_LAB_EXISTS',
      `lab '${prefix}' belongs to the running process ${old.builder.pid}; choose another --prefix`,
    );
  }
  report.say(`      removing what an earlier run left with prefix ${prefix}`);
  await destroyLab(prefix);
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
