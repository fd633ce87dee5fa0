// The CNI plugin's commands (SPEC.md 1.0.0, STATUS and GC of 1.1): the runtime's environment
// and stdin in, a result or an error object and an exit status out. The orchestrator does the
// work: ADD creates a workload in the runtime's namespace (CNI_NETNS) under CNI_IFNAME, DEL
// spins it down (its keys are wiped on the NIC), CHECK compares what is there with the
// orchestrator's record and the NIC's keys.
//
// Departures and limits: CNI_NETNS must name a namespace under /run/netns (podman, containerd
// and CRI-O put theirs there); a /proc/<pid>/ns/net path is refused with code 4. IPv4 only
// (the tenant pools are IPv4). The workload of a container is `c-<first 12 of CNI_CONTAINERID>`
// (and `-<ifname>` for an interface other than eth0).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { OrchestratorClient } from '../orchestrator/client.js';
import { tenantDomain, type WorkloadRecord } from '../orchestrator/model.js';
import { TgError } from '../util/errors.js';
import { run } from '../util/exec.js';
import { type CniConfig, parseCniArgs, parseCniConfig } from './config.js';
import {
  CNI_ERR,
  CNI_VERSION,
  type CniCommand,
  CniError,
  COMMANDS,
  SUPPORTED_VERSIONS,
  VALID_ATTACHMENTS_KEY,
} from './spec.js';

export interface CniOutcome {
  /** 0 on success. */
  exitCode: number;
  stdout: string;
}

/** Makes the orchestrator client of a configuration (mTLS when it names the files). */
export type ClientFactory = (cfg: CniConfig) => OrchestratorClient;

const NETNS_DIRS = ['/run/netns', '/var/run/netns'];
const NAME_RE = /^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$/;
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,1023}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
/** Workload names the plugin made (GC touches no others). */
export const CNI_WORKLOAD_PREFIX = 'c-';

interface Call {
  command: CniCommand;
  containerId: string;
  netnsPath: string;
  netns: string;
  ifname: string;
  args: Map<string, string>;
}

/** The workload name of a container attachment. */
export function workloadName(containerId: string, ifname: string): string {
  let base = containerId.slice(0, 12).toLowerCase();
  if (!/^[a-z0-9]+$/.test(base)) base = createHash('sha256').update(containerId).digest('hex').slice(0, 12);
  const suffix = ifname === 'eth0' ? '' : `-${ifname.toLowerCase().replace(/[^a-z0-9]/g, '')}`;
  return `${CNI_WORKLOAD_PREFIX}${base}${suffix}`.slice(0, 63);
}

function env(e: NodeJS.ProcessEnv, key: string, required: boolean): string {
  const v = e[key];
  if (v === undefined || v === '') {
    if (required) throw new CniError(CNI_ERR.INVALID_ENV, `${key} is not set`);
    return '';
  }
  if (v.length > 4096) throw new CniError(CNI_ERR.INVALID_ENV, `${key} is too long`);
  return v;
}

function netnsName(path: string): string {
  const dir = dirname(path);
  const name = basename(path);
  if (!NETNS_DIRS.includes(dir) || !/^[A-Za-z0-9_.-]{1,64}$/.test(name) || name === '.' || name === '..')
    throw new CniError(
      CNI_ERR.INVALID_ENV,
      `CNI_NETNS '${path.slice(0, 128)}' is not a named namespace under /run/netns`,
    );
  return name;
}

function readCall(e: NodeJS.ProcessEnv, command: CniCommand): Call {
  const containerId = env(
    e,
    'CNI_CONTAINERID',
    command === 'ADD' || command === 'DEL' || command === 'CHECK',
  );
  if (containerId !== '' && !CONTAINER_ID_RE.test(containerId))
    throw new CniError(
      CNI_ERR.INVALID_ENV,
      `CNI_CONTAINERID '${containerId.slice(0, 64)}' is not a container ID`,
    );
  const ifname = env(e, 'CNI_IFNAME', command === 'ADD' || command === 'DEL' || command === 'CHECK');
  if (ifname !== '' && !IFNAME_RE.test(ifname))
    throw new CniError(CNI_ERR.INVALID_ENV, `CNI_IFNAME '${ifname.slice(0, 64)}' is not an interface name`);
  // DEL may come without a namespace (it is gone already).
  const netnsPath = env(e, 'CNI_NETNS', command === 'ADD' || command === 'CHECK');
  const netns = netnsPath === '' ? '' : netnsName(netnsPath);
  return { command, containerId, netnsPath, netns, ifname, args: parseCniArgs(e.CNI_ARGS) };
}

function tenantOf(cfg: CniConfig, call: Call): string {
  const t = cfg.tenant ?? call.args.get('K8S_POD_NAMESPACE');
  if (t === undefined)
    throw new CniError(
      CNI_ERR.INVALID_NETWORK_CONFIG,
      'no tenant: the network configuration names none and CNI_ARGS has no K8S_POD_NAMESPACE',
    );
  if (!NAME_RE.test(t))
    throw new CniError(CNI_ERR.INVALID_NETWORK_CONFIG, `tenant '${t.slice(0, 64)}' is not a name`);
  return t;
}

/** Whether an error means the orchestrator could not be reached (the runtime should retry). */
function unreachable(err: unknown): boolean {
  if (!(err instanceof TgError) || err.code !== 'TG_ERR_COMMAND_FAILED') return false;
  const c = (err.cause as { code?: string } | undefined)?.code;
  return (
    c === 'ECONNREFUSED' ||
    c === 'ENOENT' ||
    c === 'ECONNRESET' ||
    c === 'EPIPE' ||
    c === 'EACCES' ||
    /no answer from|socket hang up/.test(err.message)
  );
}

/** An orchestrator failure as a CNI error: 11 when unreachable, else 7 or 100 with its code. */
function fromOrchestrator(err: unknown, what: string): CniError {
  if (err instanceof CniError) return err;
  if (unreachable(err))
    return new CniError(
      CNI_ERR.TRY_AGAIN_LATER,
      `${what}: the orchestrator is unreachable`,
      (err as Error).message,
    );
  if (err instanceof TgError) {
    const code =
      err.code === 'TG_ERR_NOT_FOUND' || err.code === 'TG_ERR_INVALID_ARGUMENT'
        ? CNI_ERR.INVALID_NETWORK_CONFIG
        : 100;
    return new CniError(code, `${what}: ${err.message}`, err.code);
  }
  return new CniError(100, `${what}: ${err instanceof Error ? err.message : String(err)}`);
}

function result(cfg: CniConfig, call: Call, w: WorkloadRecord): Record<string, unknown> {
  const v0 = cfg.cniVersion === '0.4.0';
  return {
    cniVersion: cfg.cniVersion,
    // A TUN has no MAC; the zero MAC is given because podman 4.3 refuses a result without one
    // ("invalid MAC address") although the spec makes `mac` optional.
    interfaces: [{ name: call.ifname, mac: '00:00:00:00:00:00', sandbox: call.netnsPath }],
    ips: [
      { ...(v0 ? { version: '4' } : {}), address: `${w.address}/32`, interface: 0 },
      ...(w.address6 !== undefined
        ? [{ ...(v0 ? { version: '6' } : {}), address: `${w.address6}/128`, interface: 0 }]
        : []),
    ],
    routes: [{ dst: '0.0.0.0/0' }, ...(w.address6 !== undefined ? [{ dst: '::/0' }] : [])],
    // The tenant's DNS server at the NIC, answering <name>.<tenant>.tg. (the runtime writes
    // the container's resolv.conf from this).
    dns: w.dns === undefined ? {} : { nameservers: [w.dns], search: [tenantDomain(w.tenant)] },
  };
}

async function add(cfg: CniConfig, call: Call, client: OrchestratorClient): Promise<Record<string, unknown>> {
  const tenant = tenantOf(cfg, call);
  if (!existsSync(call.netnsPath))
    throw new CniError(CNI_ERR.INVALID_ENV, `CNI_NETNS '${call.netnsPath}' does not exist`);
  const name = workloadName(call.containerId, call.ifname);
  const req = { tenant, name, host: cfg.host, netns: call.netns, ifname: call.ifname };
  let w: WorkloadRecord;
  try {
    w = await client.createWorkload(req);
  } catch (err) {
    if (!(err instanceof TgError) || err.code !== 'TG_ERR_CONFLICT')
      throw fromOrchestrator(err, `ADD of ${name}`);
    // ADD again for the same attachment: the same answer when it is the same workload.
    const there = await client.showWorkload(name).catch((e) => {
      throw fromOrchestrator(e, `ADD of ${name}`);
    });
    if (
      there.netns !== call.netns ||
      there.tenant !== tenant ||
      there.host !== cfg.host ||
      there.state !== 'running'
    )
      throw fromOrchestrator(err, `ADD of ${name}`);
    w = there;
  }
  return result(cfg, call, w);
}

async function del(cfg: CniConfig, call: Call, client: OrchestratorClient): Promise<void> {
  const name = workloadName(call.containerId, call.ifname);
  try {
    await client.deleteWorkload(name);
  } catch (err) {
    if (err instanceof TgError && err.code === 'TG_ERR_NOT_FOUND') return;
    throw fromOrchestrator(err, `DEL of ${name}`);
  }
}

async function check(cfg: CniConfig, call: Call, client: OrchestratorClient): Promise<void> {
  if (cfg.cniVersion !== '0.4.0' || cfg.prevResult !== undefined) {
    if (cfg.prevResult === undefined)
      throw new CniError(CNI_ERR.INVALID_NETWORK_CONFIG, 'CHECK needs prevResult (the result of ADD)');
  }
  const name = workloadName(call.containerId, call.ifname);
  const w = await client.showWorkload(name).catch((err) => {
    if (err instanceof TgError && err.code === 'TG_ERR_NOT_FOUND')
      throw new CniError(
        CNI_ERR.CONTAINER_UNKNOWN,
        `CHECK: no workload ${name} for container ${call.containerId}`,
      );
    throw fromOrchestrator(err, `CHECK of ${name}`);
  });
  if (w.state !== 'running' || w.netns !== call.netns)
    throw new CniError(100, `CHECK: workload ${name} is ${w.state} in namespace '${w.netns}'`);
  const ips = (cfg.prevResult?.ips ?? []) as { address?: unknown }[];
  if (cfg.prevResult !== undefined && !ips.some((i) => i.address === `${w.address}/32`))
    throw new CniError(100, `CHECK: prevResult does not list ${w.address}/32`);
  const link = await run('ip', ['-n', call.netns, '-o', '-4', 'addr', 'show', 'dev', call.ifname, 'up'], {
    timeoutMs: 10_000,
  });
  if (link.code !== 0 || link.stdout.trim() === '')
    throw new CniError(
      100,
      `CHECK: no interface ${call.ifname} up in namespace '${call.netns}'`,
      link.stderr.trim(),
    );
  if (!link.stdout.includes(` ${w.address}/32 `))
    throw new CniError(100, `CHECK: ${call.ifname} in '${call.netns}' does not have ${w.address}/32`);
  if (w.address6 !== undefined) {
    if (cfg.prevResult !== undefined && !ips.some((i) => i.address === `${w.address6}/128`))
      throw new CniError(100, `CHECK: prevResult does not list ${w.address6}/128`);
    const link6 = await run('ip', ['-n', call.netns, '-o', '-6', 'addr', 'show', 'dev', call.ifname], {
      timeoutMs: 10_000,
    });
    if (!link6.stdout.includes(` ${w.address6}/128 `))
      throw new CniError(100, `CHECK: ${call.ifname} in '${call.netns}' does not have ${w.address6}/128`);
  }
  const inv = await client.keys(cfg.host).catch((err) => {
    throw fromOrchestrator(err, `CHECK of ${name}`);
  });
  if (!inv.keys.some((k) => k.kind === 'workload-psk' && k.workload === name))
    throw new CniError(100, `CHECK: the NIC of host ${cfg.host} holds no session key of ${name}`);
}

async function status(client: OrchestratorClient): Promise<void> {
  await client.health().catch((err) => {
    throw new CniError(
      CNI_ERR.PLUGIN_NOT_AVAILABLE,
      'STATUS: the orchestrator does not answer',
      err instanceof Error ? err.message : String(err),
    );
  });
}

/** GC (1.1): removes this host's container workloads the runtime no longer lists. */
async function gc(cfg: CniConfig, client: OrchestratorClient): Promise<void> {
  const valid = new Set((cfg[VALID_ATTACHMENTS_KEY] ?? []).map((a) => workloadName(a.containerID, a.ifname)));
  const all = await client.listWorkloads().catch((err) => {
    throw fromOrchestrator(err, 'GC');
  });
  for (const w of all) {
    if (w.host !== cfg.host || w.netnsOwner !== 'runtime' || !w.name.startsWith(CNI_WORKLOAD_PREFIX))
      continue;
    if (cfg.tenant !== undefined && w.tenant !== cfg.tenant) continue;
    if (valid.has(w.name)) continue;
    await client.deleteWorkload(w.name).catch((err) => {
      if (!(err instanceof TgError && err.code === 'TG_ERR_NOT_FOUND'))
        throw fromOrchestrator(err, `GC of ${w.name}`);
    });
  }
}

function versionOf(stdin: Uint8Array): string {
  try {
    const v = (JSON.parse(Buffer.from(stdin).toString('utf8')) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' && v.length <= 32 ? v : CNI_VERSION;
  } catch {
    return CNI_VERSION;
  }
}

/**
 * Runs one CNI command. Never throws: every failure is an error object on stdout with a
 * non-zero exit status, as the spec asks.
 */
export async function runCni(
  e: NodeJS.ProcessEnv,
  stdin: Uint8Array,
  makeClient: ClientFactory,
): Promise<CniOutcome> {
  let version = CNI_VERSION;
  try {
    const command = env(e, 'CNI_COMMAND', true) as CniCommand;
    if (!(COMMANDS as readonly string[]).includes(command))
      throw new CniError(
        CNI_ERR.INVALID_ENV,
        `CNI_COMMAND '${command.slice(0, 32)}' is not one of ${COMMANDS.join(', ')}`,
      );
    if (command === 'VERSION') {
      return {
        exitCode: 0,
        stdout: JSON.stringify({ cniVersion: CNI_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] }),
      };
    }
    version = versionOf(stdin);
    const cfg = parseCniConfig(stdin);
    version = cfg.cniVersion;
    const call = readCall(e, command);
    const client = makeClient(cfg);
    switch (command) {
      case 'ADD':
        return { exitCode: 0, stdout: JSON.stringify(await add(cfg, call, client)) };
      case 'DEL':
        await del(cfg, call, client);
        return { exitCode: 0, stdout: '' };
      case 'CHECK':
        await check(cfg, call, client);
        return { exitCode: 0, stdout: '' };
      case 'STATUS':
        await status(client);
        return { exitCode: 0, stdout: '' };
      case 'GC':
        await gc(cfg, client);
        return { exitCode: 0, stdout: '' };
    }
  } catch (err) {
    const ce =
      err instanceof CniError
        ? err
        : new CniError(100, `internal error: ${err instanceof Error ? err.message : String(err)}`);
    return { exitCode: 1, stdout: JSON.stringify(ce.toObject(version)) };
  }
  return { exitCode: 1, stdout: JSON.stringify(new CniError(100, 'unreachable').toObject(version)) };
}
