// The demo's control plane when no orchestrator runs: the lab harness (LabAgents) plays the
// orchestrator's part. It creates each workload's namespace (`<prefix>-<host>-<workload>`,
// so the lab's teardown removes it), takes addresses from the tenant's pool, spins up and
// down through the harness (DESIGN.md section 5), and gives each tenant's policy to the
// harness, which pushes it to the NICs that hold the tenant (the harness's own
// allow-within-tenant default is off: a tenant without a policy gets the NIC's default deny). A migration prepares the destination (new namespace, new
// vSwitch key pair and tg0), then the source lets go (a NIC refuses a workload it knows
// behind another NIC), then the destination NIC registers it with the same address and the
// tenant's NICs learn where it went: the traffic gap spans the last three.
import { isIPv4 } from 'node:net';
import type { LabState } from '../lab/state.js';
import type { KeyMetadata } from '../nic/keystore.js';
import type { LabAgents, PlacedWorkload } from '../nic/lab-harness.js';
import type { PolicyDocument } from '../policy/model.js';
import { TgError } from '../util/errors.js';
import { run } from '../util/exec.js';
import { apiRequest } from '../util/http-json.js';
import type { DemoControl, DemoWorkload } from './control.js';

interface Tenant {
  name: string;
  base: number[];
  next: number;
}

export class LabControl implements DemoControl {
  readonly kind = 'lab-harness' as const;
  private readonly tenants = new Map<string, Tenant>();
  private readonly workloads = new Map<string, DemoWorkload>();
  private readonly policies = new Map<string, PolicyDocument>();
  private policyApi: boolean | null = null;

  constructor(
    private readonly lab: LabState,
    private readonly agents: LabAgents,
  ) {}

  describe(): string {
    return 'lab harness (LabAgents) driving the NIC and vSwitch APIs directly; no orchestrator process';
  }

  pids(): number[] {
    return [];
  }

  async createTenant(name: string, pool: string): Promise<void> {
    const m = /^(\d+\.\d+\.\d+)\.0\/24$/.exec(pool);
    if (m === null || !isIPv4(`${m[1]}.0`))
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `the lab control takes a /24 pool, not '${pool}'`);
    if (this.tenants.has(name)) throw new TgError('TG_ERR_CONFLICT', `tenant '${name}' already exists`);
    this.tenants.set(name, { name, base: m[1].split('.').map(Number), next: 10 });
  }

  async createWorkload(req: {
    name: string;
    tenant: string;
    host: string;
    labels?: Record<string, string>;
  }): Promise<DemoWorkload> {
    const t = this.tenants.get(req.tenant);
    if (t === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no tenant '${req.tenant}'`);
    if (this.workloads.has(req.name)) throw new TgError('TG_ERR_CONFLICT', `workload '${req.name}' exists`);
    const address = `${t.base.join('.')}.${t.next++}`;
    const t0 = performance.now();
    const netns = await this.addNetns(req.host, req.name);
    const t1 = performance.now();
    await this.agents.spinUp([
      { name: req.name, tenant: req.tenant, host: req.host, ns: netns, address, labels: req.labels ?? {} },
    ]);
    const t2 = performance.now();
    const w: DemoWorkload = {
      name: req.name,
      tenant: req.tenant,
      host: req.host,
      address,
      netns,
      timings: { netns: ms(t1 - t0), spinUp: ms(t2 - t1), total: ms(t2 - t0) },
    };
    this.workloads.set(w.name, w);
    return w;
  }

  async deleteWorkload(name: string): Promise<void> {
    const w = this.workload(name);
    await this.agents.spinDown(name);
    await delNetns(w.netns);
    this.workloads.delete(name);
  }

  async migrate(name: string, toHost: string): Promise<DemoWorkload> {
    const w = this.workload(name);
    if (w.host === toHost)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `'${name}' is already on '${toHost}'`);
    const old = this.agents.placed.get(name);
    if (old === undefined) throw new TgError('TG_ERR_NOT_FOUND', `workload '${name}' is not placed`);
    const t0 = performance.now();
    const netns = await this.addNetns(toHost, name);
    const vs = this.agents.vswitch(toHost);
    const nic = this.agents.nic(toHost);
    const created = await vs.create({ workload: name, netns, address: w.address });
    const t1 = performance.now();
    // A NIC refuses a workload it knows behind another NIC: the source lets go first.
    await this.agents.vswitch(w.host).delete(name);
    await this.agents.nic(w.host).removeWorkload(name);
    this.agents.placed.delete(name);
    await this.agents.syncTenant(w.tenant);
    const crypto = await nic.registerWorkload({
      tenant: w.tenant,
      workload: name,
      address: w.address,
      vswitchPublicKey: created.publicKey,
      labels: old.labels,
    });
    await vs.configure(name, {
      nicPublicKey: crypto.nicPublicKey,
      psk: crypto.psk,
      nicEndpoint: crypto.nicEndpoint,
    });
    const placed: PlacedWorkload = {
      ...old,
      host: toHost,
      ns: netns,
      vswitchPublicKey: created.publicKey,
      nicPublicKey: crypto.nicPublicKey,
      ifname: created.ifname,
    };
    this.agents.placed.set(name, placed);
    await this.agents.syncTenant(w.tenant);
    const doc = this.policies.get(w.tenant);
    if (doc !== undefined) await this.agents.setPolicy(w.tenant, doc);
    const t2 = performance.now();
    await delNetns(w.netns);
    const moved: DemoWorkload = {
      ...w,
      host: toHost,
      netns,
      timings: { destination: ms(t1 - t0), switch: ms(t2 - t1), total: ms(t2 - t0) },
    };
    this.workloads.set(name, moved);
    return moved;
  }

  keys(host: string): Promise<KeyMetadata[]> {
    return this.agents.nic(host).keys();
  }

  async setPolicy(tenant: string, doc: PolicyDocument): Promise<boolean> {
    if (!this.tenants.has(tenant)) throw new TgError('TG_ERR_NOT_FOUND', `no tenant '${tenant}'`);
    if (!(await this.hasPolicyApi())) return false;
    this.policies.set(tenant, doc);
    await this.agents.setPolicy(tenant, doc);
    return true;
  }

  async flows(): Promise<Record<string, unknown>[] | null> {
    if (!(await this.hasPolicyApi())) return null;
    const out: Record<string, unknown>[] = [];
    for (const h of this.lab.hosts) {
      for (const f of await this.agents.nic(h.name).flows({ limit: 1000 })) out.push({ host: h.name, ...f });
    }
    return out;
  }

  async close(): Promise<void> {
    // The harness's processes belong to whoever started LabAgents.
  }

  // ---------------------------------------------------------------------------------------

  private workload(name: string): DemoWorkload {
    const w = this.workloads.get(name);
    if (w === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no workload '${name}'`);
    return w;
  }

  /** Whether the NICs serve PUT/GET /v1/policy/:tenant (the router answers "no resource" otherwise). */
  private async hasPolicyApi(): Promise<boolean> {
    if (this.policyApi !== null) return this.policyApi;
    const h = this.lab.hosts[0];
    const r = await apiRequest(this.agents.nic(h.name).endpoint, 'GET', '/v1/policy/tg-probe');
    const msg = (r.body as { message?: unknown } | undefined)?.message;
    this.policyApi =
      r.status === 200 || (r.status === 404 && !(typeof msg === 'string' && msg.startsWith('no resource')));
    return this.policyApi;
  }

  private async addNetns(host: string, workload: string): Promise<string> {
    const netns = `${this.lab.prefix}-${host}-${workload}`;
    const r = await run('ip', ['netns', 'add', netns], { timeoutMs: 15_000 });
    if (r.code !== 0) throw new TgError('TG_ERR_COMMAND_FAILED', `ip netns add ${netns}: ${r.stderr.trim()}`);
    const up = await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up'], { timeoutMs: 15_000 });
    if (up.code !== 0) {
      await delNetns(netns);
      throw new TgError('TG_ERR_COMMAND_FAILED', `ip -n ${netns} link set lo up: ${up.stderr.trim()}`);
    }
    return netns;
  }
}

async function delNetns(netns: string): Promise<void> {
  await run('ip', ['netns', 'del', netns], { timeoutMs: 15_000 });
}

function ms(x: number): number {
  return Math.round(x);
}
