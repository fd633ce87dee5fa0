// The orchestrator's domain rules over the store: tenants and their address pools, hosts,
// workloads (records, addresses, states) and policy documents. No I/O to agents here: the
// lifecycle drives agents and calls these to record what it did. Every method validates
// its input first and writes in one transaction, so a refused request changes nothing.

import { nameSchema } from '../net/name.js';
import type { PolicyDocument } from '../policy/model.js';
import { parseDocument } from '../policy/validate.js';
import { TgError } from '../util/errors.js';
import { parseBody } from '../util/http-json.js';
import {
  type CreateWorkload,
  createServiceSchema,
  createTenantSchema,
  createWorkloadSchema,
  type HostRecord,
  type NamespaceRecord,
  NETNS_MAX,
  type NicState,
  type PolicyRecord,
  registerHostSchema,
  type ServiceRecord,
  type TenantRecord,
  type WorkloadRecord,
  workloadNetns,
} from './model.js';
import { hostNics, placeOnNic, withNicState } from './nics.js';
import { address6Of, highestFree, lowestFree, overlaps, parseIpv4Cidr, parsePool, pool6Of } from './pool.js';
import type { Store, StoreTx, StoreView, ViewOptions } from './store.js';

/** A read for the leader's own work (store.ts, Store.view). */
const LEADER_LEASE: ViewOptions = { leaderLease: true };

function name(value: unknown, what: string): string {
  return parseBody(nameSchema, value, what);
}

/** A tenant record with its IPv6 prefix (derived for records stored before dual stack). */
function withPool6(t: TenantRecord): TenantRecord {
  return t.pool6 !== undefined ? t : { ...t, pool6: pool6Of(parsePool(t.pool)) };
}

function tenantOf(v: StoreView, tenant: string): TenantRecord {
  const t = v.get('tenant', tenant);
  if (t === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no tenant '${tenant}'`);
  return withPool6(t.value);
}

/** A service record with its IPv6 address (derived for records stored before it was). */
function withAddress6(v: StoreView, s: ServiceRecord): ServiceRecord {
  if (s.address6 !== undefined) return s;
  const t = v.get('tenant', s.tenant);
  if (t === undefined) return s;
  return { ...s, address6: address6Of(withPool6(t.value).pool6!, s.address) };
}

/** The services of `tenant` (or all), each with its IPv6 address filled in. */
function servicesIn(v: StoreView, tenant?: string): ServiceRecord[] {
  return v
    .list('service', tenant === undefined ? '' : `${tenant}/`)
    .map((e) => withAddress6(v, e.value))
    .filter((s) => tenant === undefined || s.tenant === tenant);
}

function hostOf(v: StoreView, host: string): HostRecord {
  const h = v.get('host', host);
  if (h === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no host '${host}'`);
  return h.value;
}

function workloadOf(v: StoreView, workload: string): { value: WorkloadRecord; modRevision: number } {
  const w = v.get('workload', workload);
  if (w === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no workload '${workload}'`);
  return w;
}

/** Pools up to this prefix length get a DNS server address (a /30 keeps its two for workloads). */
export const DNS_MAX_POOL_PREFIX = 29;

/** The NIC of host `h` a new or moving workload goes to (placeOnNic); refused when none takes workloads. */
function nicFor(v: StoreView, h: HostRecord): string {
  const nic = placeOnNic(
    h,
    v.list('workload').map((o) => o.value),
  );
  if (nic === null)
    throw new TgError(
      'TG_ERR_CONFLICT',
      `host '${h.name}' has no NIC taking workloads (all failed or draining)`,
    );
  return nic;
}

function checkNetns(netns: string, host: string): void {
  if (netns.length > NETNS_MAX)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `namespace name '${netns}' on host '${host}' is longer than ${NETNS_MAX} characters`,
    );
}

export class OrchestratorService {
  constructor(
    readonly store: Store,
    private readonly now: () => Date = () => new Date(),
  ) {}

  // --- Tenants ---------------------------------------------------------------------------

  async createTenant(input: unknown): Promise<TenantRecord> {
    const req = parseBody(createTenantSchema, input);
    const pool = parsePool(req.pool);
    return this.store.txn((tx) => {
      if (tx.get('tenant', req.name) !== undefined)
        throw new TgError('TG_ERR_CONFLICT', `tenant '${req.name}' already exists`);
      for (const other of tx.list('tenant')) {
        const o = parseIpv4Cidr(other.value.pool)!;
        if (overlaps(o, pool))
          throw new TgError(
            'TG_ERR_CONFLICT',
            `pool ${pool.text} overlaps pool ${o.text} of tenant '${other.value.name}'`,
          );
      }
      const t: TenantRecord = {
        name: req.name,
        pool: pool.text,
        pool6: pool6Of(pool),
        createdAt: this.now().toISOString(),
      };
      tx.put('tenant', t.name, t, 'absent');
      this.ensureDns(tx, t);
      return t;
    });
  }

  listTenants(): Promise<TenantRecord[]> {
    return this.store.view((v) => v.list('tenant').map((e) => withPool6(e.value)));
  }

  async getTenant(tenant: unknown): Promise<TenantRecord & { workloads: number; allocated: number }> {
    const n = name(tenant, 'tenant');
    return this.store.view((v) => ({
      ...tenantOf(v, n),
      workloads: v.list('workload').filter((w) => w.value.tenant === n).length,
      allocated: v.list('allocation', `${n}/`).length,
    }));
  }

  /** Refused while the tenant has workloads; its policy goes with it. */
  async deleteTenant(tenant: unknown): Promise<{ name: string }> {
    const n = name(tenant, 'tenant');
    return this.store.txn((tx) => {
      tenantOf(tx, n);
      const ws = tx.list('workload').filter((w) => w.value.tenant === n);
      if (ws.length > 0)
        throw new TgError(
          'TG_ERR_CONFLICT',
          `tenant '${n}' still has ${ws.length} workload(s) (${ws
            .slice(0, 5)
            .map((w) => w.key)
            .join(', ')}); delete them first`,
        );
      tx.delete('tenant', n);
      if (tx.get('policy', n) !== undefined) tx.delete('policy', n);
      for (const s of tx.list('service', `${n}/`)) tx.delete('service', s.key);
      for (const a of tx.list('allocation', `${n}/`)) tx.delete('allocation', a.key);
      return { name: n };
    });
  }

  // --- Hosts -----------------------------------------------------------------------------

  async registerHost(input: unknown): Promise<HostRecord> {
    const req = parseBody(registerHostSchema, input);
    return this.store.txn((tx) => {
      if (tx.get('host', req.name) !== undefined)
        throw new TgError('TG_ERR_CONFLICT', `host '${req.name}' is already registered`);
      for (const o of tx.list('host')) {
        if (o.value.nicApi === req.nicApi || o.value.vswitchApi === req.vswitchApi)
          throw new TgError('TG_ERR_CONFLICT', `host '${o.key}' already uses these agent sockets`);
        if (o.value.netnsPrefix === req.netnsPrefix)
          throw new TgError(
            'TG_ERR_CONFLICT',
            `host '${o.key}' already uses netnsPrefix '${req.netnsPrefix}'`,
          );
      }
      const { nics, ...rest } = req;
      for (const o of tx.list('host'))
        for (const n of hostNics(o.value))
          if (nics?.some((x) => x.api === n.api))
            throw new TgError('TG_ERR_CONFLICT', `host '${o.key}' already uses NIC socket '${n.api}'`);
      const h: HostRecord = {
        ...rest,
        registeredAt: this.now().toISOString(),
        ...(nics !== undefined ? { nics: nics.map((n) => ({ ...n, state: 'ok' as const })) } : {}),
      };
      tx.put('host', h.name, h, 'absent');
      return h;
    });
  }

  listHosts(): Promise<HostRecord[]> {
    return this.store.view((v) => v.list('host').map((e) => e.value));
  }

  async getHost(host: unknown): Promise<HostRecord> {
    const n = name(host, 'host');
    return this.store.view((v) => hostOf(v, n));
  }

  /** Refused while workloads are placed on (or moving to) the host. */
  async deregisterHost(host: unknown): Promise<{ name: string }> {
    const n = name(host, 'host');
    return this.store.txn((tx) => {
      hostOf(tx, n);
      const ws = tx.list('workload').filter((w) => w.value.host === n || w.value.migratingTo === n);
      if (ws.length > 0)
        throw new TgError(
          'TG_ERR_CONFLICT',
          `host '${n}' still has ${ws.length} workload(s) (${ws
            .slice(0, 5)
            .map((w) => w.key)
            .join(', ')}); delete or migrate them first`,
        );
      tx.delete('host', n);
      return { name: n };
    });
  }

  // --- Workloads -------------------------------------------------------------------------

  listWorkloads(filter: { tenant?: string; host?: string } = {}): Promise<WorkloadRecord[]> {
    return this.store.view((v) =>
      v
        .list('workload')
        .map((e) => e.value)
        .filter(
          (w) =>
            (filter.tenant === undefined || w.tenant === filter.tenant) &&
            (filter.host === undefined || w.host === filter.host || w.migratingTo === filter.host),
        ),
    );
  }

  /**
   * The hosts, the workloads (of `tenant`, or all; none with `workloads: false`) and, with
   * `policies`, every tenant's policy document, from one consistent read: what a peer or
   * grant list is computed from. Read on the leader's lease (store.ts): for the lifecycle,
   * which runs only on the leader.
   */
  fabric(opts: { tenant?: string; policies?: boolean; workloads?: boolean } = {}): Promise<{
    hosts: HostRecord[];
    workloads: WorkloadRecord[];
    /** tenant -> its policy document (tenants without one left out). */
    policies: Map<string, unknown>;
  }> {
    return this.store.view((v) => {
      const policies = new Map<string, unknown>();
      if (opts.policies === true)
        for (const t of v.list('tenant')) {
          const p = v.get('policy', t.key);
          if (p !== undefined) policies.set(t.key, p.value.document);
        }
      return {
        hosts: v.list('host').map((e) => e.value),
        workloads:
          opts.workloads === false
            ? []
            : v
                .list('workload')
                .map((e) => e.value)
                .filter((w) => opts.tenant === undefined || w.tenant === opts.tenant),
        policies,
      };
    }, LEADER_LEASE);
  }

  async getWorkload(workload: unknown): Promise<WorkloadRecord> {
    const n = name(workload, 'workload');
    return this.store.view((v) => workloadOf(v, n).value);
  }

  /**
   * Validates a new workload, allocates the lowest free address of its tenant's pool and
   * records it in state 'creating' (one transaction). The caller spins it up, then calls
   * markRunning, or abandonWorkload to undo this.
   */
  async reserveWorkload(input: unknown): Promise<{ workload: WorkloadRecord; host: HostRecord }> {
    const req: CreateWorkload = parseBody(createWorkloadSchema, input);
    return this.store.txn((tx) => {
      const tenant = tenantOf(tx, req.tenant);
      const host = hostOf(tx, req.host);
      if (tx.get('workload', req.name) !== undefined)
        throw new TgError('TG_ERR_CONFLICT', `workload '${req.name}' already exists`);
      const runtimeNetns = req.netns;
      const netns = runtimeNetns ?? workloadNetns(host, req.name);
      checkNetns(netns, host.name);
      if (runtimeNetns !== undefined)
        for (const o of tx.list('workload'))
          if (o.value.netns === runtimeNetns)
            throw new TgError(
              'TG_ERR_CONFLICT',
              `namespace '${runtimeNetns}' already holds workload '${o.value.name}'`,
            );
      const nic = nicFor(tx, host);
      const dns = this.ensureDns(tx, tenant);
      const taken = new Set(tx.list('allocation', `${tenant.name}/`).map((a) => a.value.address));
      const address = lowestFree(parsePool(tenant.pool), taken, tenant.name);
      const w: WorkloadRecord = {
        name: req.name,
        tenant: tenant.name,
        host: host.name,
        address,
        address6: address6Of(tenant.pool6 ?? pool6Of(parsePool(tenant.pool)), address),
        netns,
        labels: req.labels ?? {},
        state: 'creating',
        migratingTo: null,
        createdAt: this.now().toISOString(),
        timings: {},
        lastError: null,
        ...(runtimeNetns !== undefined ? { netnsOwner: 'runtime' as const } : {}),
        ...(req.ifname !== undefined && req.ifname !== 'tg0' ? { ifname: req.ifname } : {}),
        ...(dns !== undefined ? { dns } : {}),
        // Recorded on a host with several NICs; on a one-NIC host the record stays as it was.
        ...(hostNics(host).length > 1 ? { nic } : {}),
      };
      tx.put(
        'allocation',
        `${tenant.name}/${address}`,
        { tenant: tenant.name, address, workload: w.name },
        'absent',
      );
      tx.put('workload', w.name, w, 'absent');
      return { workload: w, host };
    });
  }

  /** Records a finished spin-up or migration. */
  async markRunning(workload: string, timings: Record<string, number>): Promise<WorkloadRecord> {
    return this.update(workload, (w) => ({
      ...w,
      state: 'running',
      migratingTo: null,
      timings,
      lastError: null,
    }));
  }

  /** Undoes reserveWorkload: the record and its address go. */
  async abandonWorkload(workload: string): Promise<void> {
    await this.store.txn((tx) => this.remove(tx, workload));
  }

  async beginDelete(workload: unknown): Promise<{ workload: WorkloadRecord; host: HostRecord }> {
    const n = name(workload, 'workload');
    return this.store.txn((tx) => {
      const w = workloadOf(tx, n);
      if (w.value.state === 'migrating' || w.value.state === 'creating')
        throw new TgError(
          'TG_ERR_CONFLICT',
          `workload '${n}' is ${w.value.state}; try again when it is done`,
        );
      const next: WorkloadRecord = { ...w.value, state: 'deleting' };
      tx.put('workload', n, next, { modRevision: w.modRevision });
      return { workload: next, host: hostOf(tx, next.host) };
    });
  }

  /** The record and its address go (spin-down done). */
  // --- Namespaces the orchestrator created (ownership records) ---------------------------

  /** Records that the orchestrator is about to create `netns` for a workload on a host. */
  async recordNamespace(netns: string, host: string, workload: string): Promise<void> {
    await this.store.txn((tx) =>
      tx.put('namespace', netns, { name: netns, host, workload, createdAt: this.now().toISOString() }),
    );
  }

  /** Forgets a namespace record (absent is fine). */
  async forgetNamespace(netns: string): Promise<void> {
    await this.store.txn((tx) => {
      if (tx.get('namespace', netns) !== undefined) tx.delete('namespace', netns);
    });
  }

  async listNamespaces(): Promise<NamespaceRecord[]> {
    return this.store.view((v) => v.list('namespace').map((e) => e.value));
  }

  async finishDelete(workload: string): Promise<void> {
    await this.store.txn((tx) => this.remove(tx, workload));
  }

  async recordError(workload: string, message: string): Promise<void> {
    await this.update(workload, (w) => ({ ...w, lastError: message })).catch(() => undefined);
  }

  /** Checks a migration and marks the workload 'migrating' to `to`. */
  async beginMigrate(
    workload: unknown,
    to: unknown,
  ): Promise<{ workload: WorkloadRecord; from: HostRecord; to: HostRecord; netns: string; nic: string }> {
    const n = name(workload, 'workload');
    const t = name(to, 'to');
    return this.store.txn((tx) => {
      const w = workloadOf(tx, n);
      const dest = hostOf(tx, t);
      if (w.value.host === t)
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `workload '${n}' is already on host '${t}'`);
      if (w.value.state !== 'running')
        throw new TgError('TG_ERR_CONFLICT', `workload '${n}' is ${w.value.state}, not running`);
      if (w.value.netnsOwner === 'runtime')
        throw new TgError(
          'TG_ERR_CONFLICT',
          `workload '${n}' lives in its container runtime's namespace '${w.value.netns}' and cannot migrate`,
        );
      const netns = workloadNetns(dest, n);
      checkNetns(netns, dest.name);
      const nic = nicFor(tx, dest);
      const next: WorkloadRecord = { ...w.value, state: 'migrating', migratingTo: t };
      tx.put('workload', n, next, { modRevision: w.modRevision });
      return { workload: next, from: hostOf(tx, w.value.host), to: dest, netns, nic };
    });
  }

  /**
   * The moment of a migration's switch: the destination becomes the workload's host and `nic`
   * its NIC there (a move between NICs of one host changes the NIC only).
   */
  async switchHost(workload: string, to: HostRecord, nic?: string): Promise<WorkloadRecord> {
    return this.update(workload, (w) => {
      const { nic: _old, ...rest } = w;
      return {
        ...rest,
        host: to.name,
        netns: workloadNetns(to, w.name),
        ...(nic !== undefined && hostNics(to).length > 1 ? { nic } : {}),
      };
    });
  }

  /** Sets one NIC's state on its host (TG_ERR_NOT_FOUND for an unknown host or NIC). */
  async setNicState(host: unknown, nic: unknown, state: NicState): Promise<HostRecord> {
    const h = name(host, 'host');
    const n = name(nic, 'nic');
    return this.store.txn((tx) => {
      const e = tx.get('host', h);
      if (e === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no host '${h}'`);
      const next = withNicState(e.value, n, state, this.now().toISOString());
      tx.put('host', h, next, { modRevision: e.modRevision });
      return next;
    });
  }

  /** A migration that failed before its switch: the workload stays where it was. */
  async abortMigrate(workload: string, message: string): Promise<void> {
    await this.update(workload, (w) => ({ ...w, state: 'running', migratingTo: null, lastError: message }));
  }

  // --- Services and the tenant's DNS server ---------------------------------------------

  /**
   * The tenant's DNS server address, allocated (the highest free address) with the tenant (on
   * first use for a tenant recorded before tenants had one); none
   * (undefined) for a pool smaller than /DNS_MIN_POOL_PREFIX, whose few addresses are left to
   * workloads.
   */
  private ensureDns(tx: StoreTx, tenant: TenantRecord): string | undefined {
    const have = tx.list('allocation', `${tenant.name}/`).find((a) => a.value.purpose === 'dns');
    if (have !== undefined) return have.value.address;
    const pool = parsePool(tenant.pool);
    if (pool.prefix > DNS_MAX_POOL_PREFIX) return undefined;
    const taken = new Set(tx.list('allocation', `${tenant.name}/`).map((a) => a.value.address));
    const address = highestFree(pool, taken, tenant.name);
    tx.put(
      'allocation',
      `${tenant.name}/${address}`,
      { tenant: tenant.name, address, workload: '', purpose: 'dns' },
      'absent',
    );
    return address;
  }

  /** The tenant's DNS server address (allocated now if the tenant had none; undefined for a tiny pool). */
  async tenantDns(tenant: string): Promise<string | undefined> {
    return this.store.txn((tx) => this.ensureDns(tx, tenantOf(tx, tenant)));
  }

  /**
   * Records a service with a virtual address from the tenant's pool (the highest free one).
   * Its name must not be a workload's of the tenant (both are <name>.<tenant>.tg.).
   */
  async createService(input: unknown): Promise<ServiceRecord> {
    const req = parseBody(createServiceSchema, input);
    return this.store.txn((tx) => {
      const tenant = tenantOf(tx, req.tenant);
      const key = `${tenant.name}/${req.name}`;
      if (tx.get('service', key) !== undefined)
        throw new TgError(
          'TG_ERR_CONFLICT',
          `service '${req.name}' of tenant '${tenant.name}' already exists`,
        );
      const w = tx.get('workload', req.name);
      if (w !== undefined && w.value.tenant === tenant.name)
        throw new TgError(
          'TG_ERR_CONFLICT',
          `'${req.name}' is a workload of tenant '${tenant.name}'; a service needs a name of its own`,
        );
      const ports = new Set(req.ports.map((p) => `${p.port}/${p.protocol}`));
      if (ports.size !== req.ports.length)
        throw new TgError('TG_ERR_INVALID_ARGUMENT', 'ports: a port is listed twice');
      this.ensureDns(tx, tenant);
      const taken = new Set(tx.list('allocation', `${tenant.name}/`).map((a) => a.value.address));
      const address = highestFree(parsePool(tenant.pool), taken, tenant.name);
      const rec: ServiceRecord = {
        tenant: tenant.name,
        name: req.name,
        address,
        address6: address6Of(tenant.pool6 ?? pool6Of(parsePool(tenant.pool)), address),
        selector: { ...req.selector },
        ports: req.ports.map((p) => ({ port: p.port, protocol: p.protocol })),
        createdAt: this.now().toISOString(),
      };
      tx.put(
        'allocation',
        `${tenant.name}/${address}`,
        { tenant: tenant.name, address, workload: req.name, purpose: 'service' },
        'absent',
      );
      tx.put('service', key, rec, 'absent');
      return rec;
    });
  }

  listServices(filter: { tenant?: string } = {}): Promise<ServiceRecord[]> {
    return this.store.view((v) => servicesIn(v, filter.tenant));
  }

  async getService(tenant: unknown, service: unknown): Promise<ServiceRecord> {
    const t = name(tenant, 'tenant');
    const n = name(service, 'service');
    return this.store.view((v) => {
      const s = v.get('service', `${t}/${n}`);
      if (s === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no service '${n}' in tenant '${t}'`);
      return withAddress6(v, s.value);
    });
  }

  /** The service and its address go. */
  async deleteService(tenant: unknown, service: unknown): Promise<ServiceRecord> {
    const t = name(tenant, 'tenant');
    const n = name(service, 'service');
    return this.store.txn((tx) => {
      const s = tx.get('service', `${t}/${n}`);
      if (s === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no service '${n}' in tenant '${t}'`);
      tx.delete('service', s.key);
      const a = tx.get('allocation', `${t}/${s.value.address}`);
      if (a !== undefined && a.value.purpose === 'service') tx.delete('allocation', a.key);
      return s.value;
    });
  }

  /**
   * A policy document with every rule peer that names a service of the tenant
   * ({"service": "web"}) replaced by that service's selector ({"labels": {...}}): the peer
   * matches the service's endpoints, whatever host they are on. The NICs see plain labels.
   * TG_ERR_POLICY_REJECTED for a service that does not exist or a service peer with other keys.
   */
  async expandServicePeers(tenant: string, document: unknown): Promise<unknown> {
    const doc = document as { rules?: unknown };
    if (typeof document !== 'object' || document === null || !Array.isArray(doc.rules)) return document;
    const services = new Map((await this.listServices({ tenant })).map((s) => [s.name, s] as const));
    const rules = (doc.rules as unknown[]).map((rule, i) => {
      const r = rule as { peers?: unknown };
      if (typeof rule !== 'object' || rule === null || !Array.isArray(r.peers)) return rule;
      return {
        ...r,
        peers: (r.peers as unknown[]).map((peer, j) => {
          if (typeof peer !== 'object' || peer === null || !('service' in peer)) return peer;
          const p = peer as Record<string, unknown>;
          const at = `rules[${i}].peers[${j}]`;
          if (Object.keys(p).some((k) => k !== 'service' && !(k === 'tenant' && p.tenant === tenant)))
            throw new TgError(
              'TG_ERR_POLICY_REJECTED',
              `policy of tenant '${tenant}' refused: ${at}: a "service" peer takes no other key (services are the tenant's own)`,
            );
          const svc = typeof p.service === 'string' ? services.get(p.service) : undefined;
          if (svc === undefined)
            throw new TgError(
              'TG_ERR_POLICY_REJECTED',
              `policy of tenant '${tenant}' refused: ${at}: no service '${String(p.service).slice(0, 64)}' in tenant '${tenant}'`,
            );
          return { labels: { ...svc.selector } };
        }),
      };
    });
    return { ...(document as Record<string, unknown>), rules };
  }

  /** What every NIC holding the tenant is given: its DNS server and services. */
  async tenantNetwork(tenant: string): Promise<{
    dns?: string;
    services: {
      name: string;
      address: string;
      address6?: string;
      selector: Record<string, string>;
      ports: ServiceRecord['ports'];
    }[];
  }> {
    // One transaction: the DNS address (allocated if missing) and the services as of it.
    return this.store.txn((tx) => {
      const dns = this.ensureDns(tx, tenantOf(tx, tenant));
      const services = servicesIn(tx, tenant).map((s) => ({
        name: s.name,
        address: s.address,
        ...(s.address6 !== undefined ? { address6: s.address6 } : {}),
        selector: s.selector,
        ports: s.ports,
      }));
      return dns === undefined ? { services } : { dns, services };
    });
  }

  // --- Policy ----------------------------------------------------------------------------

  /** Stores a tenant's policy document (structure checked here; semantics by the NICs). */
  async setPolicy(tenant: unknown, document: unknown): Promise<PolicyRecord> {
    const n = name(tenant, 'tenant');
    const doc = this.checkPolicy(n, document);
    return this.store.txn((tx) => {
      tenantOf(tx, n);
      const p: PolicyRecord = { tenant: n, document: doc, updatedAt: this.now().toISOString() };
      tx.put('policy', n, p);
      return p;
    });
  }

  /** The document's structure (schema, tenant name); TG_ERR_POLICY_REJECTED with the reasons. */
  checkPolicy(tenant: string, document: unknown): PolicyDocument {
    const n = tenant;
    const parsed = parseDocument(document);
    if (parsed.doc === null)
      throw new TgError(
        'TG_ERR_POLICY_REJECTED',
        `policy of tenant '${n}' refused: ${parsed.errors
          .slice(0, 8)
          .map((e) => `${e.path}: ${e.message}`)
          .join('; ')}`,
      );
    if (parsed.doc.tenant !== n)
      throw new TgError(
        'TG_ERR_POLICY_REJECTED',
        `policy document names tenant '${parsed.doc.tenant}', not '${n}'`,
      );
    return parsed.doc;
  }

  /** A tenant's policy document; `opts.leaderLease` for the leader's own work (store.ts). */
  async getPolicy(tenant: unknown, opts: ViewOptions = {}): Promise<PolicyRecord> {
    const n = name(tenant, 'tenant');
    return this.store.view((v) => {
      tenantOf(v, n);
      const p = v.get('policy', n);
      if (p === undefined) throw new TgError('TG_ERR_NOT_FOUND', `tenant '${n}' has no policy document`);
      return p.value;
    }, opts);
  }

  // ---------------------------------------------------------------------------------------

  private async update(workload: string, fn: (w: WorkloadRecord) => WorkloadRecord): Promise<WorkloadRecord> {
    return this.store.txn((tx) => {
      const w = workloadOf(tx, workload);
      const next = fn(w.value);
      tx.put('workload', workload, next, { modRevision: w.modRevision });
      return next;
    });
  }

  private remove(tx: StoreTx, workload: string): void {
    const w = tx.get('workload', workload);
    if (w === undefined) return;
    tx.delete('workload', workload);
    const key = `${w.value.tenant}/${w.value.address}`;
    const a = tx.get('allocation', key);
    if (a !== undefined && a.value.workload === workload) tx.delete('allocation', key);
  }
}
