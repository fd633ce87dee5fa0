// The vSwitch daemon's domain logic: one instance per workload on this host, created,
// configured with the NIC's crypto, rotated, restarted after a crash, and deleted. Instances
// share no keys and no sessions; each device is its own process (ProcessPlatform) or its own
// engine, TUN and socket inside this daemon (SharedPlatform): either way one crashing leaves
// the others running.
import { parseCidr } from '../net/ip.js';
import { type HostAddress, parseAddress6, parseHostAddress } from '../nic/addresses.js';
import type { PskBox } from '../nic/psk-box.js';
import { keyFromBase64 } from '../protocol/crypto.js';
import { TgError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { type InstanceInfo, VSwitchInstance } from './instance.js';
import { type VSwitchPlatform, WORKLOAD_IFNAME } from './platform.js';

export const DEFAULT_TUNNEL_MTU = 1420;
/** Interface names are prefix + a base-36 counter, at most 15 characters. */
export const IFNAME_PREFIX_RE = /^tg[a-z0-9-]{0,9}$/;
const NETNS_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const MAX_ROUTES = 64;
const CLOSE_PARALLEL = 32;
/** Instances of one batch started at a time (each runs `ip`, or starts a device process). */
export const BATCH_PARALLEL = 16;
/** Instances in one batch request. */
export const MAX_BATCH = 256;

/** One item's outcome in a batch: its answer, or the error it alone met. */
export type BatchResult<T> = T | { workload: string; error: { code: string; message: string } };

/** Runs `fn` over `items`, at most `limit` at a time; each item's failure is its own result. */
async function eachSettled<T, R>(
  items: readonly T[],
  limit: number,
  workload: (item: T) => string,
  fn: (item: T) => Promise<R>,
): Promise<BatchResult<R>[]> {
  const out: BatchResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]);
      } catch (err) {
        out[i] = {
          workload: workload(items[i]),
          error: {
            code: err instanceof TgError ? err.code : 'TG_ERR_INTERNAL',
            message: err instanceof TgError ? err.message : 'internal error',
          },
        };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export interface CreateInstanceRequest {
  workload: string;
  netns: string;
  address: string;
  /** The IPv6 address of a dual-stack workload (`address` is then its IPv4 one). */
  address6?: string;
  /** Prefixes routed via tg0; default: the default route of each address's family. */
  routes?: string[];
  /** The interface's name inside the namespace (default tg0). */
  netnsIfname?: string;
}

/** Interface names inside a workload's namespace. */
const NETNS_IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

export interface ConfigureRequest {
  nicPublicKey: string;
  /** The PSK sealed by the NIC to this instance's public key. */
  sealedPsk: PskBox;
  nicEndpoint: string;
}

export interface VSwitchDaemonOptions {
  platform: VSwitchPlatform;
  log: Logger;
  /** Prefix of the devices' interface names (unique per daemon on a machine). */
  ifnamePrefix: string;
  mtu?: number;
}

export class VSwitchDaemon {
  private readonly instances = new Map<string, VSwitchInstance>();
  private readonly platform: VSwitchPlatform;
  private readonly log: Logger;
  private readonly ifnamePrefix: string;
  private readonly mtu: number;
  private nextIndex = 0;
  /** Instances that ended without being asked to, since start. */
  crashes = 0;

  constructor(opts: VSwitchDaemonOptions) {
    if (!IFNAME_PREFIX_RE.test(opts.ifnamePrefix))
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `interface prefix '${opts.ifnamePrefix}' must match ${IFNAME_PREFIX_RE}`,
      );
    this.platform = opts.platform;
    this.log = opts.log;
    this.ifnamePrefix = opts.ifnamePrefix;
    this.mtu = opts.mtu ?? DEFAULT_TUNNEL_MTU;
  }

  async create(req: CreateInstanceRequest): Promise<{ workload: string; publicKey: string; ifname: string }> {
    if (this.instances.has(req.workload))
      throw new TgError('TG_ERR_CONFLICT', `workload '${req.workload}' already has a vSwitch instance`);
    if (!NETNS_RE.test(req.netns))
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad namespace name '${req.netns.slice(0, 64)}'`);
    const address = parseHostAddress(req.address);
    const address6 = parseAddress6(address, req.address6);
    const routes = this.routes(req.routes, address, address6);
    if (!this.platform.netnsExists(req.netns))
      throw new TgError('TG_ERR_NOT_FOUND', `no namespace '${req.netns}'`);
    for (const other of this.instances.values())
      if (other.spec.netns === req.netns)
        throw new TgError(
          'TG_ERR_CONFLICT',
          `namespace '${req.netns}' already has the instance of '${other.spec.workload}'`,
        );
    const netnsIfname = req.netnsIfname ?? WORKLOAD_IFNAME;
    if (!NETNS_IFNAME_RE.test(netnsIfname))
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad interface name '${netnsIfname.slice(0, 64)}'`);
    if (await this.platform.linkExists(req.netns, netnsIfname))
      throw new TgError(
        'TG_ERR_CONFLICT',
        `namespace '${req.netns}' already has an interface ${netnsIfname}`,
      );
    const inst = await this.startInstance(
      req.workload,
      req.netns,
      address,
      address6,
      routes,
      this.newIfname(),
      netnsIfname,
    );
    return { workload: req.workload, publicKey: inst.publicKey.toString('base64'), ifname: inst.spec.ifname };
  }

  /**
   * Creates several instances in one go (a daemon that came back empty re-adopts a host's
   * workloads this way): up to BATCH_PARALLEL at a time, each checked as create() checks it,
   * with one result per request in the same order. A workload or namespace named twice in
   * the batch fails its second mention; the others go on.
   */
  async createMany(
    reqs: readonly CreateInstanceRequest[],
  ): Promise<BatchResult<{ workload: string; publicKey: string; ifname: string }>[]> {
    const workloads = new Set<string>();
    const namespaces = new Set<string>();
    const dup = new Set<number>();
    for (const [i, r] of reqs.entries()) {
      if (workloads.has(r.workload) || namespaces.has(r.netns)) dup.add(i);
      workloads.add(r.workload);
      namespaces.add(r.netns);
    }
    return eachSettled(
      [...reqs.entries()],
      BATCH_PARALLEL,
      ([, r]) => r.workload,
      async ([i, r]) => {
        if (dup.has(i))
          throw new TgError(
            'TG_ERR_CONFLICT',
            `workload '${r.workload}' or namespace '${r.netns}' is named twice in the batch`,
          );
        return this.create(r);
      },
    );
  }

  /** Configures several instances with their NIC's crypto, each as configure() does. */
  async configureMany(
    reqs: readonly (ConfigureRequest & { workload: string })[],
  ): Promise<BatchResult<InstanceInfo>[]> {
    return eachSettled(
      reqs,
      BATCH_PARALLEL,
      (r) => r.workload,
      (r) => this.configure(r.workload, r),
    );
  }

  async configure(workload: string, req: ConfigureRequest): Promise<InstanceInfo> {
    const inst = this.instanceOrThrow(workload);
    const nicPublicKey = keyFromBase64(req.nicPublicKey);
    await inst.configure({ nicPublicKey, sealedPsk: req.sealedPsk, nicEndpoint: req.nicEndpoint });
    return inst.info();
  }

  async rotatePsk(workload: string, sealedPsk: PskBox): Promise<InstanceInfo> {
    const inst = this.instanceOrThrow(workload);
    await inst.rotatePsk(sealedPsk);
    return inst.info();
  }

  /**
   * Starts a crashed or stopped instance again, in the same namespace with the same address,
   * under a fresh key pair (the old private key died with its process): the NIC must be told
   * the new public key, then configure() gives the instance its crypto again.
   */
  async restart(workload: string): Promise<{ workload: string; publicKey: string; ifname: string }> {
    const old = this.instanceOrThrow(workload);
    if (old.running)
      throw new TgError(
        'TG_ERR_CONFLICT',
        `instance '${workload}' is running; delete it or wait for it to end`,
      );
    await old.stop(this.platform);
    this.instances.delete(workload);
    const s = old.spec;
    const inst = await this.startInstance(
      workload,
      s.netns,
      s.address,
      s.address6,
      s.routes,
      s.ifname,
      s.netnsIfname,
    );
    return { workload, publicKey: inst.publicKey.toString('base64'), ifname: inst.spec.ifname };
  }

  async delete(workload: string): Promise<{ workload: string }> {
    const inst = this.instanceOrThrow(workload);
    await inst.stop(this.platform);
    this.instances.delete(workload);
    this.log.info({ workload }, 'vSwitch instance deleted');
    return { workload };
  }

  list(): InstanceInfo[] {
    return [...this.instances.values()].map((i) => i.info());
  }

  get(workload: string): InstanceInfo {
    return this.instanceOrThrow(workload).info();
  }

  counts(): { instances: number; running: number; crashed: number } {
    let running = 0;
    let crashed = 0;
    for (const i of this.instances.values()) {
      if (i.running) running++;
      if (i.state === 'crashed') crashed++;
    }
    return { instances: this.instances.size, running, crashed };
  }

  /** Stops every instance, CLOSE_PARALLEL at a time (each stop runs `ip` or ends a process). */
  async close(): Promise<void> {
    const all = [...this.instances.values()];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < all.length) await all[next++].stop(this.platform).catch(() => undefined);
    };
    await Promise.all(Array.from({ length: Math.min(CLOSE_PARALLEL, all.length) }, worker));
    await this.platform.close?.();
    this.instances.clear();
  }

  private async startInstance(
    workload: string,
    netns: string,
    address: HostAddress,
    address6: HostAddress | null,
    routes: string[],
    ifname: string,
    netnsIfname: string,
  ): Promise<VSwitchInstance> {
    const inst = await VSwitchInstance.start(
      this.platform,
      { workload, netns, address, address6, routes, ifname, netnsIfname, mtu: this.mtu },
      this.log,
      () => {
        this.crashes++;
      },
    );
    this.instances.set(workload, inst);
    return inst;
  }

  private routes(given: string[] | undefined, address: HostAddress, address6: HostAddress | null): string[] {
    const list = given ?? [
      address.family === 4 ? '0.0.0.0/0' : '::/0',
      ...(address6 !== null ? ['::/0'] : []),
    ];
    if (list.length > MAX_ROUTES)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `at most ${MAX_ROUTES} routes`);
    return list.map((r) => {
      const c = parseCidr(r);
      if (c === null)
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `route '${r.slice(0, 64)}' is not a prefix`);
      return c.text;
    });
  }

  private newIfname(): string {
    for (;;) {
      const name = `${this.ifnamePrefix}${(this.nextIndex++).toString(36)}`;
      if (name.length > 15) throw new TgError('TG_ERR_CONFLICT', 'out of interface names');
      let used = false;
      for (const i of this.instances.values()) if (i.spec.ifname === name) used = true;
      if (!used) return name;
    }
  }

  private instanceOrThrow(workload: string): VSwitchInstance {
    const i = this.instances.get(workload);
    if (i === undefined)
      throw new TgError('TG_ERR_NOT_FOUND', `no vSwitch instance for workload '${workload}'`);
    return i;
  }
}
