// The demo's steps after the lab and its agents are up: tenants and policies, workloads,
// traffic within and between tenants, captures, key inventories, a live migration, a
// spin-down and a throughput run. Each step reports its claims as checks and its measured
// numbers as figures; a failed claim is reported and the demo goes on with the next step.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { LabAgents } from '../lab/agents.js';
import type { LabState } from '../lab/state.js';
import type { KeyMetadata } from '../nic/keystore.js';
import { isZero } from '../protocol/crypto.js';
import { uapiGet } from '../uapi/client.js';
import { uapiSocketPath } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import { runOk } from '../util/exec.js';
import { analyseCapture, type Capture, startCapture } from './capture.js';
import { allowWithinTenant, type DemoControl, type DemoWorkload } from './control.js';
import { keyNeedles, type Needle, scanProcessMemory } from './memscan.js';
import { type DemoReporter, median, table } from './report.js';
import {
  CROSS_TENANT,
  EGRESS,
  IPV6,
  MIGRATION,
  NIC_FAILOVER,
  NO_POLICY,
  SAME_TENANT,
  SERVICE,
  SPIN_DOWN,
  TENANTS,
  THROUGHPUT,
  VSWITCHD_KILL,
  WORKLOADS,
} from './scenario.js';
import {
  firstReply,
  httpGet,
  iperf,
  ping,
  pingStream,
  resolveName,
  stopIfAborted,
  tcpTransfer,
} from './traffic.js';

/** The bytes of the TCP transfers: the 16-byte marker repeated this many times (64 KiB). */
const TRANSFER_REPEAT = 4096;

export interface StepContext {
  lab: LabState;
  /** The NIC agents and vSwitch daemons (the PSK scan reads the vSwitch side's devices). */
  agents: LabAgents;
  control: DemoControl;
  report: DemoReporter;
  signal: AbortSignal;
  /** Pids of long-running processes started by the steps (captures). */
  pids: number[];
  iperfSeconds: number;
}

export class DemoSteps {
  readonly workloads = new Map<string, DemoWorkload>();
  private readonly captures: Capture[] = [];
  private controlCapture: Capture | null = null;
  private readonly files: string[] = [];
  /** 16 random bytes sent in pings and TCP transfers, then looked for in the captures. */
  private readonly marker = randomBytes(16);
  private policyEnforced = false;
  /** False when the egress steps could not run (the workload's NIC has no uplink). */
  private egressShown = true;

  constructor(private readonly c: StepContext) {}

  private get r(): DemoReporter {
    return this.c.report;
  }

  /** What the requests go through, for progress lines. */
  private get via(): string {
    return "the orchestrator's API";
  }

  private w(name: string): DemoWorkload {
    const w = this.workloads.get(name);
    if (w === undefined) throw new TgError('TG_ERR_NOT_FOUND', `workload '${name}' was not created`);
    return w;
  }

  private pcap(name: string): string {
    const f = `/tmp/${this.c.lab.prefix}-${process.pid}-${name}.pcap`;
    this.files.push(f);
    return f;
  }

  // --- Tenants and policy ----------------------------------------------------------------

  async tenants(): Promise<void> {
    this.r.step(`tenants and policies, through ${this.via}`);
    for (const t of TENANTS) {
      await this.c.control.createTenant(t.name, t.pool);
      this.r.check(`tenant ${t.name} created`, true, `address pool ${t.pool}`);
    }
    for (const t of TENANTS) {
      const egress = t.name === EGRESS.tenant && this.c.lab.outside !== undefined;
      const set = await this.c.control.setPolicy(t.name, tenantPolicy(t.name, egress));
      this.policyEnforced = set;
      if (set)
        this.r.check(
          `policy of ${t.name} set`,
          true,
          `allow any protocol between its own workloads${egress ? `; its web workloads may reach ${EGRESS.allowedName}:${EGRESS.port} (toFQDN)` : ''}; everything else default deny`,
        );
    }
    if (this.policyEnforced) {
      this.r.result.policy =
        'per-tenant documents (allow within tenant) enforced by each NIC; default deny otherwise';
    } else {
      this.r.result.policy =
        'the NICs serve no policy API in this build: tenants are kept apart by per-tenant sessions and routing only';
      this.r.say(`      ${this.r.result.policy}`);
      this.r.notShown('per-tenant policy documents (the NICs have no policy API in this build)');
    }
  }

  /** Captures from before the first workload, so the handshakes are on them too. */
  async startCaptures(): Promise<void> {
    const lab = this.c.lab;
    for (const h of lab.hosts) {
      const cap = await startCapture(
        `host link ${h.name}`,
        h.hostNs,
        h.pcie.hostIf,
        this.pcap(`${h.name}-link`),
      );
      this.captures.push(cap);
      if (cap.pid !== undefined) this.c.pids.push(cap.pid);
    }
    const h1 = lab.hosts[0];
    const fab = await startCapture(
      `fabric port of ${h1.name}'s NIC`,
      lab.fabric.ns,
      h1.fabric.bridgeIf,
      this.pcap('fabric'),
    );
    this.captures.push(fab);
    if (fab.pid !== undefined) this.c.pids.push(fab.pid);
    this.r.say(
      `      capturing: ${this.captures.map((c) => c.where).join(', ')} (tcpdump in their namespaces)`,
    );
  }

  // --- Workloads -------------------------------------------------------------------------

  async createWorkloads(): Promise<void> {
    this.r.step(`workloads: ${WORKLOADS.length} created through ${this.via}`);
    const apiMs: number[] = [];
    const firstPacketMs: number[] = [];
    const rows: string[][] = [
      ['workload', 'tenant', 'host', 'address', 'namespace', 'spin-up', 'first packet'],
    ];
    for (const spec of WORKLOADS) {
      stopIfAborted(this.c.signal);
      const mate = [...this.workloads.values()].find((w) => w.tenant === spec.tenant);
      const t0 = performance.now();
      let w: DemoWorkload;
      try {
        w = await this.c.control.createWorkload(spec);
      } catch (err) {
        this.r.check(`workload ${spec.name} created on ${spec.host}`, false, (err as Error).message);
        continue;
      }
      const ms = Math.round(performance.now() - t0);
      apiMs.push(ms);
      this.workloads.set(w.name, w);
      let first = '-';
      if (mate !== undefined) {
        const f = await firstReply(w.netns, mate.address, t0, 10_000, this.c.signal);
        if (f !== null) {
          firstPacketMs.push(Math.round(f));
          first = `${Math.round(f)} ms (to ${mate.name})`;
        } else first = `none within 10 s (to ${mate.name})`;
      }
      rows.push([w.name, w.tenant, w.host, w.address, w.netns, `${ms} ms`, first]);
      await this.pskScan(`the spin-up of ${w.name}`);
    }
    this.r.show(table(rows));
    const steps = new Map<string, number[]>();
    for (const w of this.workloads.values())
      for (const [k, v] of Object.entries(w.timings)) steps.set(k, [...(steps.get(k) ?? []), v]);
    if (steps.size > 0)
      this.r.say(
        `      spin-up steps as the orchestrator timed them (median ms): ${[...steps]
          .map(([k, v]) => `${k} ${Math.round(median(v))}`)
          .join(', ')}`,
      );
    this.r.check(
      `${WORKLOADS.length} workloads running`,
      this.workloads.size === WORKLOADS.length,
      `${this.workloads.size} created, each with its own namespace, tg0 and address from its tenant's pool`,
    );
    if (apiMs.length > 0) {
      this.r.figure('spinup_ms_median', median(apiMs));
      this.r.figure('spinup_ms_max', Math.max(...apiMs));
    }
    const expectFirst = WORKLOADS.length - TENANTS.length;
    this.r.check(
      'every workload with a tenant-mate reached it right after spin-up',
      firstPacketMs.length === expectFirst,
      firstPacketMs.length > 0
        ? `${firstPacketMs.length}/${expectFirst}; API call to first ping reply: median ${median(firstPacketMs)} ms`
        : `0/${expectFirst}`,
    );
    if (firstPacketMs.length > 0) this.r.figure('first_packet_ms_median', median(firstPacketMs));
  }

  // --- Traffic ---------------------------------------------------------------------------

  async sameTenant(): Promise<void> {
    this.r.step(
      'same-tenant traffic, same host and cross host (ping with a marker payload + 64 KiB TCP echo)',
    );
    const marker = this.marker.toString('hex');
    // Positive control for the captures: inside a destination workload the marker is plaintext.
    const dest = this.w(SAME_TENANT.find(([, , what]) => what === 'cross host')![1]);
    this.controlCapture = await startCapture(`tg0 inside ${dest.name}`, dest.netns, 'tg0', this.pcap('tg0'));
    if (this.controlCapture.pid !== undefined) this.c.pids.push(this.controlCapture.pid);
    let port = 40200;
    for (const [from, to, what] of SAME_TENANT) {
      stopIfAborted(this.c.signal);
      const a = this.w(from);
      const b = this.w(to);
      const p = await ping(a.netns, b.address, { count: 5, pattern: marker, signal: this.c.signal });
      const t = await tcpTransfer(a.netns, b.netns, b.address, marker, {
        repeat: TRANSFER_REPEAT,
        port: port++,
        signal: this.c.signal,
      });
      this.r.check(
        `${a.tenant} ${what}: ${from} (${a.host}) -> ${to} (${b.host}) ${b.address}`,
        p.received === 5 && t.intact,
        `ping ${p.received}/5${p.rttAvgMs !== null ? ` rtt ${p.rttAvgMs.toFixed(2)} ms` : ''}; ` +
          `TCP ${t.sent / 1024} KiB ${t.intact ? `echoed intact in ${t.ms} ms` : `echoed ${t.echoed} bytes`}`,
      );
    }
  }

  /**
   * IPv6: every workload has its tenant's IPv6 address beside the IPv4 one; ping6 (with the
   * marker, so the captures cover it) and a 64 KiB TCP echo across hosts; another tenant's
   * IPv6 address unreachable.
   */
  async ipv6(): Promise<void> {
    this.r.step('IPv6 (dual stack): ping6 + 64 KiB TCP echo across hosts; another tenant blocked');
    const ws = [...this.workloads.values()];
    const missing = ws.filter((w) => w.address6 === undefined || !w.address6.startsWith('fd'));
    this.r.check(
      "every workload has an IPv6 address from its tenant's ULA prefix beside its IPv4 one",
      ws.length > 0 && missing.length === 0,
      missing.length === 0
        ? ws.map((w) => `${w.name} ${w.address} ${w.address6}`).join(', ')
        : `without: ${missing.map((w) => w.name).join(', ')}`,
    );
    const a = this.w(IPV6.from);
    const b = this.w(IPV6.to);
    const o = this.w(IPV6.otherTenant);
    if (a.address6 === undefined || b.address6 === undefined || o.address6 === undefined) return;
    const marker = this.marker.toString('hex');
    const p = await ping(a.netns, b.address6, { count: 5, pattern: marker, signal: this.c.signal });
    const t = await tcpTransfer(a.netns, b.netns, b.address6, marker, {
      repeat: TRANSFER_REPEAT,
      port: 40250,
      signal: this.c.signal,
    });
    this.r.check(
      `IPv6 cross host: ${a.name} (${a.host}) -> ${b.name} (${b.host}) ${b.address6}`,
      p.received === 5 && t.intact,
      `ping6 ${p.received}/5${p.rttAvgMs !== null ? ` rtt ${p.rttAvgMs.toFixed(2)} ms` : ''}; ` +
        `TCP ${t.sent / 1024} KiB ${t.intact ? `echoed intact in ${t.ms} ms` : `echoed ${t.echoed} bytes`}`,
    );
    if (p.rttAvgMs !== null) this.r.figure('ipv6_rtt_ms', Math.round(p.rttAvgMs * 100) / 100);
    if (t.intact) this.r.figure('ipv6_tcp_echo_ms', t.ms);
    const x = await ping(a.netns, o.address6, { count: 3, waitS: 1, signal: this.c.signal });
    this.r.check(
      `IPv6 cross tenant: ${a.name} (${a.tenant}) -> ${o.name} (${o.tenant}) ${o.address6} blocked over IPv6`,
      x.received === 0,
      `ping6 ${x.received}/${x.sent}`,
    );
  }

  async crossTenant(): Promise<void> {
    this.r.step(
      this.policyEnforced
        ? 'isolation: cross-tenant traffic blocked; a tenant without a policy gets nothing through'
        : 'isolation: cross-tenant traffic blocked',
    );
    let port = 40300;
    const since = Date.now();
    for (const [from, to, what] of CROSS_TENANT) {
      stopIfAborted(this.c.signal);
      const a = this.w(from);
      const b = this.w(to);
      const blocked = await this.blocked(a, b, port++);
      this.r.check(
        `${what}: ${from} (${a.tenant}) -> ${to} (${b.tenant}) ${b.address} blocked`,
        blocked.ok,
        blocked.detail,
      );
    }
    if (this.policyEnforced) await this.defaultDeny(port, since);
  }

  /**
   * A service reached by name from the other host: the tenant's DNS server at the client's NIC
   * answers <service>.<tenant>.tg with the service address (the namespace's resolv.conf names
   * it), the client's NIC load-balances the connection to the endpoint behind the other NIC;
   * another tenant's workload name is NXDOMAIN.
   */
  async serviceByName(): Promise<void> {
    this.r.step(
      `a service by name: ${SERVICE.name}.${SERVICE.tenant}.tg from ${SERVICE.from}, endpoint on the other host`,
    );
    const svc = await this.c.control.createService({
      tenant: SERVICE.tenant,
      name: SERVICE.name,
      selector: SERVICE.selector,
      port: `${SERVICE.port}/tcp`,
    });
    const a = this.w(SERVICE.from);
    const b = this.w(SERVICE.endpoint);
    const fqdn = `${svc.name}.${svc.tenant}.tg`;
    const r = await resolveName(a.netns, fqdn, this.c.signal);
    this.r.check(
      `service name ${fqdn} resolves to the service address at ${a.name}`,
      r.address === svc.address,
      `${fqdn} -> ${r.address ?? r.error} (service address ${svc.address})`,
    );
    const t = await tcpTransfer(a.netns, b.netns, fqdn, this.marker.toString('hex'), {
      repeat: TRANSFER_REPEAT,
      port: SERVICE.port,
      bind: b.address,
      signal: this.c.signal,
    });
    this.r.check(
      `service by name: ${a.name} (${a.host}) to ${fqdn}:${SERVICE.port} reaches ${b.name} (${b.host}) ${b.address}`,
      t.intact,
      `TCP ${t.sent / 1024} KiB ${t.intact ? `echoed intact in ${t.ms} ms` : `echoed ${t.echoed} bytes`}`,
    );
    if (t.intact) this.r.figure('service_by_name_tcp_ms', t.ms);
    const f = await resolveName(a.netns, SERVICE.foreignName, this.c.signal);
    this.r.check(
      `another tenant's name ${SERVICE.foreignName} is unknown to ${svc.tenant}'s DNS server`,
      f.address === null && f.error === 'ENOTFOUND',
      `${SERVICE.foreignName} -> ${f.address ?? f.error}`,
    );
  }

  // --- Egress ------------------------------------------------------------------------------

  /**
   * Egress by DNS name: acme's policy lets its web workloads reach allowed.example on port 80
   * (a toFQDN rule); the name resolves through acme's DNS server at the NIC, which forwards it
   * upstream because the policy allows it; the NIC lets through the address that answer gave,
   * source-NATed to its uplink address: the uplink carries the plaintext, from that address only.
   */
  async egressAllowed(): Promise<void> {
    const o = this.c.lab.outside;
    if (o === undefined) {
      this.r.notShown('egress (the lab was built without its outside namespace)');
      return;
    }
    this.r.step(
      `egress allowed: ${EGRESS.from} to http://${EGRESS.allowedName}/ by a toFQDN rule, source-NATed at the NIC's uplink`,
    );
    const a = this.w(EGRESS.from);
    if (a.nic !== undefined && a.nic !== 'nic1') {
      // The lab gives each host's first NIC an uplink; another NIC has none.
      this.r.notShown(`egress (${a.name} runs on ${a.host}'s ${a.nic}, which has no uplink in the lab)`);
      this.egressShown = false;
      return;
    }
    const r = await resolveName(a.netns, EGRESS.allowedName, this.c.signal);
    this.r.check(
      `${EGRESS.allowedName} resolves through ${EGRESS.tenant}'s DNS server at the NIC (forwarded upstream: the policy allows the name)`,
      r.address === o.webA,
      `${EGRESS.allowedName} -> ${r.address ?? r.error}`,
    );
    const nic = this.c.lab.hosts.find((h) => h.name === a.host)!;
    const up = o.uplinks.find((u) => u.host === a.host)!;
    const file = this.pcap('uplink');
    const cap = await startCapture(`uplink of ${a.host}'s NIC`, nic.nicNs, up.nicIf, file);
    if (cap.pid !== undefined) this.c.pids.push(cap.pid);
    let g: Awaited<ReturnType<typeof httpGet>>;
    try {
      g = await httpGet(a.netns, `http://${EGRESS.allowedName}:${EGRESS.port}/`, 3000, this.c.signal);
    } finally {
      await cap.stop();
    }
    this.r.check(
      `HTTP GET http://${EGRESS.allowedName}/ from ${a.name} is answered by the outside web server A`,
      g.status === 200 && g.body.includes(`web A:${EGRESS.allowedName}`),
      g.error ?? `${g.status} ${JSON.stringify(g.body.trim())} in ${g.ms} ms`,
    );
    if (g.status === 200) this.r.figure('egress_http_ms', g.ms);
    const seen = await captureAddresses(file);
    this.r.check(
      `on the uplink the flow comes from the NIC's uplink address ${up.snatV4}, never from ${a.name}'s own ${a.address}`,
      seen.includes(up.snatV4) && !seen.includes(a.address) && !seen.some((x) => x.startsWith('100.64.')),
      `addresses on the uplink: ${seen.join(', ')}`,
    );
    const flows = (await this.c.control.flows()) ?? [];
    const rec = flows.find((f) => f.verdict === 'allow' && f.dst === o.webA && f.dstPort === EGRESS.port);
    this.r.check(
      'the flow log records the egress flow with the name it was allowed by',
      rec !== undefined && rec.outsideName === EGRESS.allowedName,
      rec === undefined
        ? 'no record'
        : `${rec.srcWorkload} ${rec.src} -> ${rec.dst}:${rec.dstPort} ${rec.outsideName ?? '(no name)'} by ${rec.egressRule}`,
    );
  }

  /** Egress denied: another name is refused by the DNS server, its raw address dropped and logged. */
  async egressDenied(): Promise<void> {
    const o = this.c.lab.outside;
    if (o === undefined || !this.egressShown) return;
    this.r.step(
      `egress denied by name: ${EGRESS.deniedName} (and its address ${o.webB}) from ${EGRESS.from}`,
    );
    const a = this.w(EGRESS.from);
    const r = await resolveName(a.netns, EGRESS.deniedName, this.c.signal);
    this.r.check(
      `${EGRESS.deniedName} does not resolve: no egress rule names it, so the NIC's DNS server refuses it`,
      r.address === null,
      `${EGRESS.deniedName} -> ${r.address ?? r.error}`,
    );
    const byName = await httpGet(a.netns, `http://${EGRESS.deniedName}:${EGRESS.port}/`, 2000, this.c.signal);
    const byAddress = await httpGet(a.netns, `http://${o.webB}:${EGRESS.port}/`, 1500, this.c.signal);
    this.r.check(
      `HTTP to ${EGRESS.deniedName} and to its raw address ${o.webB} is blocked at the NIC`,
      byName.status === null && byAddress.status === null,
      `by name: ${byName.error ?? byName.status}; by address: ${byAddress.error ?? byAddress.status}`,
    );
    const flows = (await this.c.control.flows()) ?? [];
    const rec = flows.find((f) => f.verdict === 'deny' && f.dst === o.webB && f.dstPort === EGRESS.port);
    this.r.check(
      'the flow log records the denied egress flow',
      rec !== undefined && rec.srcWorkload === a.name,
      rec === undefined
        ? 'no record'
        : `${rec.srcWorkload} ${rec.src} -> ${rec.dst}:${rec.dstPort} ${rec.rule}`,
    );
  }

  /** A tenant with no policy document: even its own workloads cannot reach each other. */
  private async defaultDeny(port: number, since: number): Promise<void> {
    await this.c.control.createTenant(NO_POLICY.tenant, NO_POLICY.pool);
    const made: DemoWorkload[] = [];
    try {
      for (const spec of NO_POLICY.workloads) made.push(await this.c.control.createWorkload(spec));
      const [a, b] = made;
      const blocked = await this.blocked(a, b, port);
      this.r.check(
        `default deny: ${a.name} (${a.host}) -> ${b.name} (${b.host}) ${b.address}, same tenant ${a.tenant} but no policy`,
        blocked.ok,
        blocked.detail,
      );
      // Cross-tenant packets never reach the firewall (no route in the sender's tenant
      // table); the default-deny ones do, and the flow log shows its verdicts.
      const flows = await this.c.control.flows();
      if (flows !== null) {
        const recent = flows.filter((f) => typeof f.startMs === 'number' && f.startMs >= since - 1000);
        const denied = recent.filter((f) => f.verdict === 'deny' && f.tenant === NO_POLICY.tenant);
        const allowed = flows.filter((f) => f.verdict === 'allow');
        const rules = (xs: Record<string, unknown>[]): string =>
          [...new Set(xs.map((f) => String(f.rule)))].join(', ');
        this.r.check(
          'the flow logs show the verdicts',
          denied.length > 0 && allowed.length > 0,
          `${denied.length} denied ${NO_POLICY.tenant} flows (${rules(denied)}); ` +
            `${allowed.length} allowed same-tenant flows (${rules(allowed)})`,
        );
      }
    } finally {
      for (const w of made) await this.c.control.deleteWorkload(w.name);
    }
  }

  private async blocked(
    a: DemoWorkload,
    b: DemoWorkload,
    port: number,
  ): Promise<{ ok: boolean; detail: string }> {
    const p = await ping(a.netns, b.address, { count: 3, waitS: 1, signal: this.c.signal });
    const t = await tcpTransfer(a.netns, b.netns, b.address, this.marker.toString('hex'), {
      repeat: 4,
      port,
      timeoutMs: 1500,
      signal: this.c.signal,
    });
    return {
      ok: p.received === 0 && t.echoed === 0 && t.serverReceived === 0,
      detail: `ping ${p.received}/${p.sent}; TCP: ${t.serverReceived === 0 ? 'no connection' : `${t.serverReceived} bytes arrived`}`,
    };
  }

  async analyseCaptures(): Promise<void> {
    this.r.step('captures: no plaintext on the host links or the fabric, only WireGuard');
    await this.controlCapture?.stop();
    for (const c of this.captures) await c.stop();
    if (this.controlCapture !== null) {
      const a = await analyseCapture(this.controlCapture.where, this.controlCapture.file, this.marker);
      this.r.check(
        `control: the marker is visible in plaintext on ${a.where}`,
        a.markerFound,
        `${a.frames} frames; the search below would find it`,
      );
    }
    for (const c of this.captures) {
      const a = await analyseCapture(c.where, c.file, this.marker);
      const types = Object.entries(a.types)
        .map(([t, n]) => `${WG_TYPES[t] ?? `type ${t}`} ${n}`)
        .join(', ');
      this.r.check(
        `${a.where}: marker absent, every UDP packet is WireGuard`,
        !a.markerFound &&
          a.udpPackets > 0 &&
          a.wgPackets === a.udpPackets &&
          (a.types['1'] ?? 0) > 0 &&
          (a.types['4'] ?? 0) > 0 &&
          a.otherFrames === 0,
        `${a.frames} frames, ${a.udpPackets} UDP, ${a.wgPackets} WireGuard (${types}); ` +
          `marker ${a.markerFound ? 'FOUND' : 'absent'}; ${a.otherFrames} other frames`,
      );
    }
    for (const f of this.files) rmSync(f, { force: true });
  }

  // --- Keys ------------------------------------------------------------------------------

  async keyInventory(): Promise<void> {
    this.r.step('key inventory per NIC (metadata only: kind, owner, fingerprint)');
    const offHost: string[] = [];
    for (const h of this.c.lab.hosts) {
      const inv = await this.c.control.keys(h.name);
      // On a host with several NICs every entry names its NIC; each NIC has its own keys.
      const multi = inv.some((k) => k.nic !== undefined);
      this.r.say(multi ? `      NICs of ${h.name}:` : `      NIC of ${h.name}:`);
      this.r.show(
        table([
          ['kind', 'tenant', 'workload', 'fingerprint', ...(multi ? ['nic'] : [])],
          ...sortKeys(inv).map((k) => [
            k.kind,
            k.tenant ?? '-',
            k.workload ?? '-',
            k.fingerprint,
            ...(multi ? [k.nic ?? '-'] : []),
          ]),
        ]),
        '        ',
      );
      const tenantKeys = inv.filter((k) => k.kind === 'tenant-off-host');
      const psks = inv.filter((k) => k.kind === 'workload-psk');
      const here = [...this.workloads.values()].filter((w) => w.host === h.name);
      const tenantsHere = new Set(here.map((w) => w.tenant));
      offHost.push(...tenantKeys.map((k) => k.fingerprint));
      const fps = inv.map((k) => k.fingerprint);
      const byNic = new Map<string, typeof inv>();
      for (const k of inv) byNic.set(k.nic ?? 'nic1', [...(byNic.get(k.nic ?? 'nic1') ?? []), k]);
      let apart = new Set(fps).size === fps.length;
      const perNic: string[] = [];
      for (const [nic, ks] of byNic) {
        const onHost = ks.filter((k) => k.kind === 'nic-on-host');
        const tk = ks.filter((k) => k.kind === 'tenant-off-host');
        const tenantsOn = new Set(here.filter((w) => (w.nic ?? 'nic1') === nic).map((w) => w.tenant));
        apart &&=
          onHost.length === 1 &&
          tk.length === tenantsOn.size &&
          tk.every((k) => k.fingerprint !== onHost[0].fingerprint);
        perNic.push(
          `${nic}: 1 on-host key, ${tk.length} off-host (${[...tenantsOn].join(', ') || 'no tenant'})`,
        );
      }
      this.r.check(
        `${h.name}: on-host and off-host keys are different keys`,
        apart,
        multi
          ? `${perNic.join('; ')}; all fingerprints distinct`
          : `1 on-host key, ${tenantKeys.length} off-host keys (one per tenant here: ${[...tenantsHere].join(', ')}), all fingerprints distinct`,
      );
      this.r.check(
        `${h.name}: one PSK per workload on this host`,
        psks.length === here.length && here.every((w) => psks.some((k) => k.workload === w.name)),
        `${psks.length} PSKs for ${here.map((w) => w.name).join(', ')}`,
      );
    }
    this.r.check(
      "each tenant's off-host key differs per NIC and per tenant",
      offHost.length > 0 && new Set(offHost).size === offHost.length,
      `${offHost.length} off-host keys, ${new Set(offHost).size} distinct`,
    );
  }

  // --- Migration -------------------------------------------------------------------------

  async migrate(): Promise<void> {
    const m = MIGRATION;
    const w = this.w(m.workload);
    const from = w.host;
    const src = this.w(m.streamFrom);
    this.r.step(
      `live migration: ${w.name} ${from} -> ${m.to} while ${src.name} pings it every ${m.intervalMs} ms`,
    );
    const pskBefore = (await this.c.control.keys(from)).find((k) => k.workload === w.name);
    const stream = pingStream(src.netns, w.address, m.intervalMs, 60);
    if (stream.pid !== undefined) this.c.pids.push(stream.pid);
    let moved: DemoWorkload | null = null;
    let migrateMs = 0;
    try {
      const until = performance.now() + 5000;
      while (stream.replies() < 25 && performance.now() < until) await sleep(50);
      stopIfAborted(this.c.signal);
      const t0 = performance.now();
      moved = await this.c.control.migrate(w.name, m.to);
      migrateMs = Math.round(performance.now() - t0);
      const atSwitch = stream.replies();
      const resumeBy = performance.now() + 10_000;
      while (stream.replies() < atSwitch + 50 && performance.now() < resumeBy) await sleep(50);
    } finally {
      const s = await stream.stop();
      this.r.figure('migration_gap_ms', s.gapMs);
      this.r.figure('migration_lost_packets', s.lost);
      this.r.figure('migration_ms', migrateMs);
      if (moved !== null) {
        this.workloads.set(moved.name, moved);
        this.r.check(
          `${w.name} moved ${from} -> ${moved.host}, address kept`,
          moved.host === m.to && moved.address === w.address && moved.netns !== w.netns,
          `${moved.address} now in ${moved.netns}; migration call ${migrateMs} ms`,
        );
      }
      this.r.check(
        'the ping stream kept going through the migration',
        s.received > 0 && s.received + s.lost >= 75,
        `${s.sent} sent, ${s.received} replies, ${s.lost} lost; gap ${s.gapMs} ms ` +
          `(longest silence ${s.longestSilenceMs} ms at a ${s.intervalMs} ms interval)`,
      );
    }
    stopIfAborted(this.c.signal);
    for (const peer of [
      src,
      ...[...this.workloads.values()].filter(
        (x) => x.tenant === w.tenant && x.host === m.to && x.name !== w.name,
      ),
    ]) {
      // A peer on a NIC that had no session with the new host's NIC yet: the first reply
      // waits for the off-host handshake (hosts with several NICs).
      if (this.c.lab.hosts.some((h) => (h.extraNics ?? []).length > 0))
        await firstReply(peer.netns, w.address, performance.now(), 5000, this.c.signal);
      const p = await ping(peer.netns, w.address, { count: 3, signal: this.c.signal });
      this.r.check(
        `${peer.name} (${peer.host}) reaches ${w.name} on its new host`,
        p.received === 3,
        `ping ${p.received}/3`,
      );
    }
    const invFrom = await this.c.control.keys(from);
    const invTo = await this.c.control.keys(m.to);
    const pskAfter = invTo.find((k) => k.workload === w.name);
    this.r.check(
      `${w.name}'s on-host key moved: wiped on ${from}, new on ${m.to}`,
      !invFrom.some((k) => k.workload === w.name) &&
        pskAfter !== undefined &&
        pskAfter.fingerprint !== pskBefore?.fingerprint,
      `${from}: ${pskBefore?.fingerprint ?? '?'} gone; ${m.to}: ${pskAfter?.fingerprint ?? 'none'}`,
    );
  }

  // --- A killed vSwitch daemon -----------------------------------------------------------

  /**
   * SIGKILLs a host's vSwitch daemon (its devices end with it: in process isolation each one's
   * stdin is a pipe from the daemon) while a workload there pings one on the other host; the
   * lab's supervisor starts it again and the orchestrator re-adopts the host's workloads (new
   * instances and keys), with no call from here.
   */
  async vswitchdRecovery(): Promise<void> {
    const k = VSWITCHD_KILL;
    const src = this.w(k.streamFrom);
    const dst = this.w(k.streamTo);
    const here = [...this.workloads.values()].filter((w) => w.host === k.host).map((w) => w.name);
    this.r.step(
      `a killed vSwitch daemon: ${k.host}'s (carrying ${here.join(', ')}) SIGKILLed while ${src.name} pings ${dst.name} every ${k.intervalMs} ms`,
    );
    const agents = this.c.agents;
    const old = agents.vswitchds.get(k.host);
    if (old === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no vSwitch daemon on ${k.host}`);
    const keysBefore = new Map((await agents.vswitch(k.host).list()).map((i) => [i.workload, i.publicKey]));
    const restartsBefore = agents.vswitchdRestarts.get(k.host) ?? 0;
    const stream = pingStream(src.netns, dst.address, k.intervalMs, 30);
    if (stream.pid !== undefined) this.c.pids.push(stream.pid);
    let backMs = -1;
    let readoptedMs = -1;
    let passesMs = -1;
    let keysAfter = new Map<string, string>();
    try {
      const warm = performance.now() + 5000;
      while (stream.replies() < 10 && performance.now() < warm) await sleep(20);
      stopIfAborted(this.c.signal);
      const atKill = stream.replies();
      const t0 = performance.now();
      process.kill(old.pid, 'SIGKILL');
      this.r.say(`      SIGKILL to the vswitchd of ${k.host} (pid ${old.pid}); nobody calls anything now`);
      const until = t0 + k.boundMs + 5000;
      let nextList = 0;
      while (performance.now() < until && (passesMs < 0 || readoptedMs < 0)) {
        stopIfAborted(this.c.signal);
        const now = agents.vswitchds.get(k.host);
        if (backMs < 0 && now !== undefined && now.pid !== old.pid) {
          backMs = Math.round(performance.now() - t0);
          this.c.pids.push(now.pid);
        }
        // Replies counted after the kill: 5 in a row mean the stream passes again.
        if (passesMs < 0 && stream.replies() >= atKill + 5 && backMs >= 0)
          passesMs = Math.round(performance.now() - t0);
        // The daemon's instance list every 250 ms (an mTLS call each): re-adopted when every
        // workload of the host is configured again.
        if (backMs >= 0 && readoptedMs < 0 && performance.now() >= nextList) {
          nextList = performance.now() + 250;
          const list = await agents
            .vswitch(k.host)
            .list()
            .catch(() => []);
          const configured = list.filter((i) => i.state === 'configured');
          if (here.every((n) => configured.some((i) => i.workload === n))) {
            readoptedMs = Math.round(performance.now() - t0);
            keysAfter = new Map(configured.map((i) => [i.workload, i.publicKey]));
          }
        }
        await sleep(20);
      }
      const resumed = stream.replies();
      const more = performance.now() + 2000;
      while (stream.replies() < resumed + 25 && performance.now() < more) await sleep(20);
    } finally {
      const s = await stream.stop();
      this.r.figure('vswitchd_kill_gap_ms', s.gapMs);
      this.r.figure('vswitchd_kill_lost_packets', s.lost);
      if (backMs >= 0) this.r.figure('vswitchd_back_ms', backMs);
      if (readoptedMs >= 0) this.r.figure('vswitchd_readopted_ms', readoptedMs);
      const restarted = agents.vswitchds.get(k.host);
      this.r.check(
        `the lab's supervisor restarted the vSwitch daemon of ${k.host}`,
        backMs >= 0 && (agents.vswitchdRestarts.get(k.host) ?? 0) === restartsBefore + 1,
        backMs >= 0
          ? `pid ${old.pid} killed; pid ${restarted?.pid} answers ${backMs} ms later`
          : `no new daemon within ${k.boundMs + 5000} ms`,
      );
      const renewed = here.filter((n) => keysAfter.has(n) && keysAfter.get(n) !== keysBefore.get(n));
      this.r.check(
        `the orchestrator re-adopted ${here.length} workloads of ${k.host} with new keys, without a call`,
        readoptedMs >= 0 && renewed.length === here.length,
        readoptedMs >= 0
          ? `${here.map((n) => `${n} ${(keysBefore.get(n) ?? '?').slice(0, 8)}… -> ${(keysAfter.get(n) ?? '?').slice(0, 8)}…`).join(', ')}; all configured ${readoptedMs} ms after the kill`
          : `not all configured within ${k.boundMs + 5000} ms`,
      );
      this.r.check(
        `${src.name} (${src.host}) -> ${dst.name} (${dst.host}) passes again within ${k.boundMs / 1000} s of the kill`,
        passesMs >= 0 && passesMs <= k.boundMs && s.received > 0,
        `${s.sent} sent, ${s.received} replies, ${s.lost} lost; passes again ${passesMs >= 0 ? `${passesMs} ms` : 'never'} after the kill; gap ${s.gapMs} ms ` +
          `(longest silence ${s.longestSilenceMs} ms at a ${s.intervalMs} ms interval)`,
      );
    }
  }

  // --- Secrets in the control plane ------------------------------------------------------

  /**
   * Every live workload's PSK as its vSwitch device holds it (read over the device's UAPI
   * socket), then a scan of the orchestrator process's memory for each of them (raw, base64,
   * hex): the orchestrator relays PSKs only sealed, so it must hold none.
   */
  async pskScan(when: string): Promise<void> {
    const pid = this.c.control.pids()[0];
    const needles: Needle[] = [];
    const held: string[] = [];
    const missing: string[] = [];
    for (const h of this.c.lab.hosts) {
      for (const inst of await this.c.agents.vswitch(h.name).list()) {
        if (!this.workloads.has(inst.workload)) continue;
        let psk: Uint8Array | null | undefined;
        try {
          const snap = await uapiGet(uapiSocketPath(inst.ifname));
          psk = snap.peers[0]?.presharedKey;
        } catch {
          psk = undefined;
        }
        if (psk instanceof Uint8Array && psk.length === 32 && !isZero(psk)) {
          held.push(inst.workload);
          needles.push(...keyNeedles(inst.workload, psk));
          psk.fill(0);
        } else missing.push(inst.workload);
      }
    }
    const t0 = performance.now();
    let found: [string, number][] = [];
    let scanned = 0;
    let problem = '';
    if (pid === undefined) problem = 'no orchestrator process to scan';
    else {
      try {
        const r = scanProcessMemory(pid, needles);
        found = Object.entries(r.found);
        scanned = r.bytesScanned;
      } catch (err) {
        problem = (err as Error).message;
      }
    }
    for (const n of needles) n.bytes.fill(0);
    const expected = this.workloads.size;
    this.r.result.security.pskScans++;
    if (found.length > 0) this.r.result.security.pskScansWithHits++;
    this.r.check(
      `after ${when}: the orchestrator's memory holds none of the workloads' PSKs; their vSwitch devices hold them`,
      problem === '' && found.length === 0 && held.length === expected && missing.length === 0,
      problem !== ''
        ? problem
        : `${held.length}/${expected} PSKs held on the vSwitch side${missing.length > 0 ? ` (none for ${missing.join(', ')})` : ''}; ` +
            `orchestrator pid ${pid}: ${Math.round(scanned / 1048576)} MiB scanned in ${Math.round(performance.now() - t0)} ms, ` +
            (found.length === 0
              ? 'no copy as raw bytes, base64 or hex'
              : `found ${found.map(([k, v]) => `${k} x${v}`).join(', ')}`),
    );
  }

  // --- NIC failover (--nics N > 1) -------------------------------------------------------

  /**
   * Kills (SIGKILL) the agent of the NIC carrying a workload while a workload on the other
   * host pings it: the orchestrator marks the NIC failed and moves its workloads to the host's
   * other NIC with new keys; then the agent is started again and, reconciled, takes workloads
   * again.
   */
  async nicFailover(): Promise<void> {
    const f = NIC_FAILOVER;
    const w = this.w(f.workload);
    const src = this.w(f.streamFrom);
    const host = w.host;
    const before = await this.c.control.showWorkload(w.name);
    const victim = before.nic ?? 'nic1';
    this.r.step(
      `NIC failover: the agent of ${host}'s ${victim} (carrying ${w.name}) is killed while ${src.name} pings ${w.name} every ${f.intervalMs} ms`,
    );
    const keysBefore = new Set(
      (await this.c.control.keys(host)).filter((k) => (k.nic ?? 'nic1') === victim).map((k) => k.fingerprint),
    );
    const carried = (
      await Promise.all(
        [...this.workloads.values()]
          .filter((x) => x.host === host)
          .map((x) => this.c.control.showWorkload(x.name)),
      )
    )
      .filter((x) => (x.nic ?? 'nic1') === victim)
      .map((x) => x.name);
    this.r.say(`      ${victim} carries ${carried.join(', ')}`);
    const stream = pingStream(src.netns, w.address, f.intervalMs, 60);
    if (stream.pid !== undefined) this.c.pids.push(stream.pid);
    let after: DemoWorkload | null = null;
    try {
      const until = performance.now() + 5000;
      while (stream.replies() < 25 && performance.now() < until) await sleep(50);
      stopIfAborted(this.c.signal);
      const atKill = stream.replies();
      await this.c.agents.stopNic(host, 'SIGKILL', victim);
      const by = performance.now() + 20_000;
      while (performance.now() < by) {
        after = await this.c.control.showWorkload(w.name);
        if ((after.nic ?? 'nic1') !== victim && stream.replies() >= atKill + 50) break;
        await sleep(100);
      }
    } finally {
      const s = await stream.stop();
      this.r.figure('nic_failover_gap_ms', s.gapMs);
      this.r.figure('nic_failover_lost_packets', s.lost);
      this.r.check(
        `NIC failover: traffic to ${w.name} passes again within ${f.boundMs / 1000} s of ${victim}'s agent being killed`,
        s.received > 0 && s.longestSilenceMs <= f.boundMs,
        `${s.sent} sent, ${s.received} replies, ${s.lost} lost; gap ${s.gapMs} ms (longest silence ${s.longestSilenceMs} ms at a ${s.intervalMs} ms interval)`,
      );
    }
    stopIfAborted(this.c.signal);
    const now = await Promise.all(carried.map((n) => this.c.control.showWorkload(n)));
    const nics = await this.c.control.hostNics(host);
    this.r.check(
      `NIC failover: ${host}'s ${victim} is failed and its workloads are carried by another NIC of ${host}`,
      now.every((x) => x.host === host && (x.nic ?? 'nic1') !== victim) &&
        nics.some((n) => n.name === victim && n.state === 'failed'),
      `${now.map((x) => `${x.name} on ${x.nic ?? 'nic1'}`).join(', ')}; NICs: ${nics.map((n) => `${n.name} ${n.state}`).join(', ')}`,
    );
    const to = after?.nic ?? 'nic1';
    const newKeys = (await this.c.control.keys(host)).filter(
      (k) =>
        (k.nic ?? 'nic1') === to && (k.workload === w.name || (k.tenant === w.tenant && k.workload === null)),
    );
    this.r.check(
      `NIC failover: ${w.name}'s keys on ${to} are new (none of them was ever on ${victim})`,
      newKeys.some((k) => k.workload === w.name) && newKeys.every((k) => !keysBefore.has(k.fingerprint)),
      newKeys.map((k) => `${k.kind} ${k.fingerprint}`).join(', '),
    );
    const p = await ping(src.netns, w.address, { count: 3, signal: this.c.signal });
    this.r.check(
      `${src.name} reaches ${w.name} through ${host}'s ${to}`,
      p.received === 3,
      `ping ${p.received}/3`,
    );
    // The killed agent comes back (a person or systemd restarts it): reconciled, it takes workloads again.
    const again = await this.c.agents.startNic(host, victim);
    this.c.pids.push(again.pid);
    const by = performance.now() + 15_000;
    let state = '';
    while (performance.now() < by) {
      state = (await this.c.control.hostNics(host)).find((n) => n.name === victim)?.state ?? '';
      if (state === 'ok') break;
      await sleep(200);
    }
    this.r.check(
      `NIC failover: ${victim}'s restarted agent is reconciled and takes workloads again`,
      state === 'ok',
      `pid ${again.pid}; ${victim} ${state}`,
    );
  }

  // --- Spin-down -------------------------------------------------------------------------

  async spinDown(): Promise<void> {
    const w = this.w(SPIN_DOWN.workload);
    const peer = this.w(SPIN_DOWN.checkFrom);
    this.r.step(`spin-down: ${w.name} (the last ${w.tenant} workload on ${w.host}) and its keys`);
    const before = (await this.c.control.keys(w.host)).filter((k) => k.tenant === w.tenant);
    this.r.say(
      `      ${w.host} before: ${before.map((k) => `${k.kind} ${k.workload ?? k.tenant} ${k.fingerprint}`).join('; ')}`,
    );
    const t0 = performance.now();
    await this.c.control.deleteWorkload(w.name);
    const ms = Math.round(performance.now() - t0);
    this.r.figure('spindown_ms', ms);
    this.workloads.delete(w.name);
    const after = (await this.c.control.keys(w.host)).filter((k) => k.tenant === w.tenant);
    this.r.say(
      `      ${w.host} after:  ${after.length === 0 ? `no ${w.tenant} key` : after.map((k) => k.fingerprint).join('; ')}`,
    );
    this.r.check(
      `${w.name}'s PSK and ${w.tenant}'s off-host key on ${w.host} are wiped`,
      before.some((k) => k.kind === 'workload-psk') &&
        before.some((k) => k.kind === 'tenant-off-host') &&
        after.length === 0,
      `${before.length} ${w.tenant} keys before, ${after.length} after (spin-down ${ms} ms)`,
    );
    const p = await ping(peer.netns, w.address, { count: 2, waitS: 1, signal: this.c.signal });
    this.r.check(
      `${w.address} no longer answers ${peer.name}`,
      p.received === 0,
      `ping ${p.received}/${p.sent}`,
    );
  }

  // --- Throughput ------------------------------------------------------------------------

  async throughput(): Promise<void> {
    const a = this.w(THROUGHPUT.from);
    const b = this.w(THROUGHPUT.to);
    this.r.step(
      `throughput: iperf3 TCP ${this.c.iperfSeconds} s, ${a.name} (${a.host}) -> ${b.name} (${b.host}), both legs encrypted`,
    );
    if (this.c.iperfSeconds === 0) {
      this.r.say('      skipped (--iperf-seconds 0)');
      this.r.notShown('throughput (skipped with --iperf-seconds 0)');
      return;
    }
    const f = await iperf(a.netns, b.netns, b.address, this.c.iperfSeconds, this.c.signal);
    this.r.figure('mbps_cross_host', Math.round(f.mbps));
    this.r.check(
      'same-tenant cross-host TCP throughput measured',
      f.mbps > 0,
      `${f.mbps >= 1000 ? `${(f.mbps / 1000).toFixed(2)} Gbit/s` : `${f.mbps.toFixed(0)} Mbit/s`}, ${f.retransmits} retransmits (workload -> vSwitch -> NIC -> fabric -> NIC -> vSwitch -> workload)`,
    );
  }

  /** Stops any capture still running and removes the capture files. */
  async cleanup(): Promise<void> {
    await this.controlCapture?.stop().catch(() => undefined);
    for (const c of this.captures) await c.stop().catch(() => undefined);
    for (const f of this.files) rmSync(f, { force: true });
  }
}

const WG_TYPES: Record<string, string> = {
  '1': 'initiation',
  '2': 'response',
  '3': 'cookie',
  '4': 'transport',
};

const KIND_ORDER = ['nic-identity', 'nic-seal', 'nic-on-host', 'tenant-off-host', 'workload-psk'];

function sortKeys<K extends KeyMetadata>(inv: K[]): K[] {
  const rank = (k: string): number => {
    const i = KIND_ORDER.indexOf(k);
    return i < 0 ? KIND_ORDER.length : i;
  };
  return [...inv].sort(
    (a, b) =>
      rank(a.kind) - rank(b.kind) ||
      (a.tenant ?? '').localeCompare(b.tenant ?? '') ||
      (a.workload ?? '').localeCompare(b.workload ?? ''),
  );
}

/**
 * A tenant's policy: its own workloads may talk to each other; with `egress`, its web
 * workloads may also reach EGRESS.allowedName on EGRESS.port (a toFQDN rule).
 */
function tenantPolicy(tenant: string, egress: boolean): ReturnType<typeof allowWithinTenant> {
  const doc = allowWithinTenant(tenant);
  if (egress)
    doc.rules.push({
      id: 'web-egress',
      action: 'allow',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ fqdn: EGRESS.allowedName }],
      protocol: 'tcp',
      ports: [EGRESS.port],
    });
  return doc;
}

/** The IPv4 source and destination addresses in a capture file (tshark). */
async function captureAddresses(file: string): Promise<string[]> {
  const out = await runOk('tshark', ['-r', file, '-T', 'fields', '-e', 'ip.src', '-e', 'ip.dst'], {
    timeoutMs: 60_000,
  });
  return [...new Set(out.split(/\s+/).filter((x) => x !== ''))].sort();
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
