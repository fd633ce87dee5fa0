// `tenguard tenant|host|workload|service|policy|flows|keys`: the orchestrator's command line, a thin
// client of its API (--api PATH, default $TENGUARD_ORCHESTRATOR or /run/tenguard/orchestrator.sock).
// Arguments are checked before anything is sent; a bad one exits 2 with TG_ERR_USAGE.
// --json prints the API's answer as one JSON document.
import { createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { assembleIdentity, type Identity } from '../identity/identity.js';
import { clientTlsOptions } from '../identity/mtls.js';
import { serviceId } from '../identity/spiffe.js';
import { TrustBundle } from '../identity/trust-bundle.js';
import { defaultOrchestratorSocket, OrchestratorClient } from '../orchestrator/client.js';
import type { WorkloadRecord } from '../orchestrator/model.js';
import {
  type CertificateExpiry,
  certificateExpiry,
  type InstallationStatus,
} from '../orchestrator/observe.js';
import { TgError } from '../util/errors.js';
import type { ApiEndpoint } from '../util/http-json.js';

export const CONTROL_USAGE = `usage:
  tenguard tenant create <name> --pool <CIDR in 100.64.0.0/10>
  tenguard tenant list | show <name> | delete <name>
  tenguard host register <name> --nic-api <socket> --vswitch-api <socket> --netns-prefix <prefix>
                [--nic NAME=SOCKET ...]          every NIC of the host, the first one at --nic-api
  tenguard host list | show <name> | deregister <name>
  tenguard host drain-nic <host> <nic>          its workloads move to the host's other NICs (new keys)
  tenguard host undrain-nic <host> <nic>        it takes workloads again
  tenguard workload create <name> --tenant <t> --host <h> [--label k=v ...]
  tenguard workload list | show <name> | delete <name>
  tenguard workload migrate <name> --to <host>
  tenguard service create <name> --tenant <t> --selector k=v [--selector k=v ...] --port 80/tcp [--port ...]
  tenguard service list [--tenant T] | show <name> --tenant <t> | delete <name> --tenant <t>
  tenguard policy set <tenant> [--file F]      (the document from F, or from stdin)
  tenguard policy show <tenant>
  tenguard flows [--tenant T] [--since S] [--limit N]
  tenguard keys <host> [--nic N]
  tenguard status                              the installation at a glance: orchestrator, hosts
                                               with NIC and vSwitch, tenants, workloads,
                                               certificate expiry, drops
  tenguard console login                       a one-time login link to the web console

  every command takes --json (print the API's answer) and --api PATH (the orchestrator's socket;
  default $TENGUARD_ORCHESTRATOR, else /run/tenguard/orchestrator.sock).
  The orchestrator is called over mTLS as the operator: the X.509-SVID chain, its private key
  and the trusted roots (PEM) are cert.pem, key.pem and bundle.pem in the operator directory,
  $TENGUARD_HOME/operator, else /etc/tenguard/operator for root, else
  ~/.config/tenguard/operator (key.pem readable by its owner only), or --cert FILE, --key FILE
  and --ca-bundle FILE; the orchestrator must prove spiffe://TD/service/orchestrator of the
  certificate's trust domain. --insecure: plain HTTP, against an orchestrator run --insecure.`;

type Values = Record<string, string | boolean | string[] | undefined>;

function parse(
  args: string[],
  options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>,
  positionals: number,
): { values: Values; positionals: string[] } {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({
      args,
      options: {
        ...options,
        json: { type: 'boolean' },
        api: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        'ca-bundle': { type: 'string' },
        insecure: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: true,
    }) as { values: Values; positionals: string[] };
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${CONTROL_USAGE}`);
  }
  if (parsed.positionals.length !== positionals)
    throw new TgError(
      'TG_ERR_USAGE',
      `expected ${positionals} argument(s), got ${parsed.positionals.length}\n${CONTROL_USAGE}`,
    );
  return parsed;
}

function required(v: Values, name: string): string {
  const x = v[name];
  if (typeof x !== 'string' || x.length === 0)
    throw new TgError('TG_ERR_USAGE', `--${name} is required\n${CONTROL_USAGE}`);
  return x;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `cannot read ${what} ${path}`, { cause: err });
  }
}

/** The operator's identity and the trusted roots, from --cert, --key and --ca-bundle. */
function mtlsEndpoint(v: Values, socketPath: string): ApiEndpoint {
  const [certFile, keyFile, bundleFile] = [v.cert, v.key, v['ca-bundle']];
  if (typeof certFile !== 'string' || typeof keyFile !== 'string' || typeof bundleFile !== 'string')
    throw new TgError('TG_ERR_USAGE', `--cert, --key and --ca-bundle go together\n${CONTROL_USAGE}`);
  let keyPem: Buffer;
  try {
    keyPem = readFileSync(keyFile);
  } catch (err) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `cannot read the key ${keyFile}`, { cause: err });
  }
  let identity: Identity;
  try {
    identity = assembleIdentity(createPrivateKey(keyPem), readText(certFile, 'the certificate'));
  } catch (err) {
    if (err instanceof TgError) throw err;
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${keyFile} is not a private key (PEM)`, { cause: err });
  } finally {
    keyPem.fill(0);
  }
  const td = identity.spiffeId.trustDomain;
  const bundle = TrustBundle.fromPem(td, readText(bundleFile, 'the CA bundle'));
  const server = serviceId(td, 'orchestrator').uri;
  return { socketPath, tls: () => clientTlsOptions(identity, bundle, [server]) };
}

/** The directory of the operator's credentials (cert.pem, key.pem, bundle.pem). */
export function operatorDir(env: NodeJS.ProcessEnv = process.env): string {
  const home = env.TENGUARD_HOME;
  if (home !== undefined && home !== '') return join(home, 'operator');
  if (process.getuid?.() === 0) return '/etc/tenguard/operator';
  return join(homedir(), '.config', 'tenguard', 'operator');
}

/** The operator certificate (PEM file) a command would use; null with --insecure. */
function operatorCertFile(v: Values): string | null {
  if (v.insecure === true) return null;
  return typeof v.cert === 'string' ? v.cert : join(operatorDir(), 'cert.pem');
}

function client(v: Values): OrchestratorClient {
  const socket = typeof v.api === 'string' ? v.api : defaultOrchestratorSocket();
  const flags = v.cert !== undefined || v.key !== undefined || v['ca-bundle'] !== undefined;
  if (v.insecure === true) {
    if (flags)
      throw new TgError(
        'TG_ERR_USAGE',
        `--insecure and --cert/--key/--ca-bundle exclude each other\n${CONTROL_USAGE}`,
      );
    return new OrchestratorClient(socket);
  }
  if (flags) return new OrchestratorClient(mtlsEndpoint(v, socket));
  const dir = operatorDir();
  const files = {
    cert: join(dir, 'cert.pem'),
    key: join(dir, 'key.pem'),
    'ca-bundle': join(dir, 'bundle.pem'),
  };
  if (!Object.values(files).every((f) => existsSync(f)))
    throw new TgError(
      'TG_ERR_USAGE',
      `no operator credentials: ${dir} lacks cert.pem, key.pem or bundle.pem; give --cert, --key and --ca-bundle, or --insecure for an orchestrator run --insecure\n${CONTROL_USAGE}`,
    );
  return new OrchestratorClient(mtlsEndpoint({ ...v, ...files }, socket));
}

function out(v: Values, value: unknown, text: () => string): number {
  process.stdout.write(v.json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
  return 0;
}

function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function labelsText(l: Record<string, string>): string {
  return Object.entries(l)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

function workloadText(w: WorkloadRecord): string {
  const t = Object.entries(w.timings)
    .map(([k, ms]) => `${k}=${ms}ms`)
    .join(' ');
  return [
    `workload ${w.name}`,
    `  tenant   ${w.tenant}`,
    `  host     ${w.host}${w.migratingTo ? ` (migrating to ${w.migratingTo})` : ''}`,
    ...(w.nic !== undefined ? [`  nic      ${w.nic}`] : []),
    `  address  ${w.address}${w.address6 !== undefined ? `, ${w.address6}` : ''}`,
    `  netns    ${w.netns}`,
    `  labels   ${labelsText(w.labels) || '-'}`,
    `  state    ${w.state}`,
    `  timings  ${t || '-'}`,
    ...(w.lastError ? [`  error    ${w.lastError}`] : []),
  ].join('\n');
}

async function tenant(sub: string | undefined, args: string[]): Promise<number> {
  switch (sub) {
    case 'create': {
      const { values: v, positionals: p } = parse(args, { pool: { type: 'string' } }, 1);
      const t = await client(v).createTenant({ name: p[0], pool: required(v, 'pool') });
      return out(v, t, () => `tenant ${t.name} created, pool ${t.pool}, IPv6 prefix ${t.pool6 ?? '-'}`);
    }
    case 'list': {
      const { values: v } = parse(args, {}, 0);
      const ts = await client(v).listTenants();
      return out(v, { tenants: ts }, () =>
        table([
          ['TENANT', 'POOL', 'POOL6', 'CREATED'],
          ...ts.map((t) => [t.name, t.pool, t.pool6 ?? '-', t.createdAt]),
        ]),
      );
    }
    case 'show': {
      const { values: v, positionals: p } = parse(args, {}, 1);
      const t = await client(v).showTenant(p[0]);
      return out(
        v,
        t,
        () =>
          `tenant ${t.name}\n  pool       ${t.pool}\n  pool6      ${t.pool6 ?? '-'}\n  workloads  ${t.workloads}\n  allocated  ${t.allocated}`,
      );
    }
    case 'delete': {
      const { values: v, positionals: p } = parse(args, {}, 1);
      const r = await client(v).deleteTenant(p[0]);
      return out(v, r, () => `tenant ${r.name} deleted`);
    }
  }
  throw new TgError('TG_ERR_USAGE', `unknown tenant command '${sub ?? ''}'\n${CONTROL_USAGE}`);
}

async function host(sub: string | undefined, args: string[]): Promise<number> {
  switch (sub) {
    case 'register': {
      const { values: v, positionals: p } = parse(
        args,
        {
          'nic-api': { type: 'string' },
          'vswitch-api': { type: 'string' },
          'netns-prefix': { type: 'string' },
          nic: { type: 'string', multiple: true },
        },
        1,
      );
      const nics = ((v.nic as string[] | undefined) ?? []).map((x) => {
        const i = x.indexOf('=');
        if (i <= 0) throw new TgError('TG_ERR_USAGE', `--nic '${x}' is not NAME=SOCKET`);
        return { name: x.slice(0, i), api: x.slice(i + 1) };
      });
      const h = await client(v).registerHost({
        name: p[0],
        nicApi: required(v, 'nic-api'),
        vswitchApi: required(v, 'vswitch-api'),
        netnsPrefix: required(v, 'netns-prefix'),
        ...(nics.length > 0 ? { nics } : {}),
      });
      return out(v, h, () => `host ${h.name} registered`);
    }
    case 'list': {
      const { values: v } = parse(args, {}, 0);
      const hs = await client(v).listHosts();
      return out(v, { hosts: hs }, () =>
        table([
          ['HOST', 'NIC API', 'VSWITCH API', 'NETNS PREFIX'],
          ...hs.map((h) => [h.name, h.nicApi, h.vswitchApi, h.netnsPrefix]),
        ]),
      );
    }
    case 'show': {
      const { values: v, positionals: p } = parse(args, {}, 1);
      const h = await client(v).showHost(p[0]);
      return out(
        v,
        h,
        () =>
          `host ${h.name}\n  nic api      ${h.nicApi}\n  vswitch api  ${h.vswitchApi}\n  netns prefix ${h.netnsPrefix}\n  registered   ${h.registeredAt}` +
          (h.nics ?? []).map((n) => `\n  nic ${n.name.padEnd(9)}${n.state.padEnd(9)}${n.api}`).join(''),
      );
    }
    case 'drain-nic': {
      const { values: v, positionals: p } = parse(args, {}, 2);
      const r = await client(v).drainNic(p[0], p[1]);
      return out(v, r, () =>
        [
          `NIC ${r.nic} of host ${r.host} drained in ${r.ms} ms: ${r.moved.length} workload(s) moved`,
          ...r.moved.map((m) => `  ${m.workload} -> ${m.to} (${m.ms} ms)`),
          ...r.errors.map((e) => `  error: ${e}`),
        ].join('\n'),
      );
    }
    case 'undrain-nic': {
      const { values: v, positionals: p } = parse(args, {}, 2);
      const h = await client(v).undrainNic(p[0], p[1]);
      return out(v, h, () => `NIC ${p[1]} of host ${h.name} takes workloads again`);
    }
    case 'deregister': {
      const { values: v, positionals: p } = parse(args, {}, 1);
      const r = await client(v).deregisterHost(p[0]);
      return out(v, r, () => `host ${r.name} deregistered`);
    }
  }
  throw new TgError('TG_ERR_USAGE', `unknown host command '${sub ?? ''}'\n${CONTROL_USAGE}`);
}

function parseLabels(list: string[], option = 'label'): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const l of list) {
    const i = l.indexOf('=');
    if (i <= 0) throw new TgError('TG_ERR_USAGE', `--${option} '${l}' is not key=value`);
    labels[l.slice(0, i)] = l.slice(i + 1);
  }
  return labels;
}

async function workload(sub: string | undefined, args: string[]): Promise<number> {
  switch (sub) {
    case 'create': {
      const { values: v, positionals: p } = parse(
        args,
        { tenant: { type: 'string' }, host: { type: 'string' }, label: { type: 'string', multiple: true } },
        1,
      );
      const labels = parseLabels((v.label as string[] | undefined) ?? []);
      const w = await client(v).createWorkload({
        name: p[0],
        tenant: required(v, 'tenant'),
        host: required(v, 'host'),
        ...(Object.keys(labels).length > 0 ? { labels } : {}),
      });
      return out(v, w, () => workloadText(w));
    }
    case 'list': {
      const { values: v } = parse(args, {}, 0);
      const ws = await client(v).listWorkloads();
      return out(v, { workloads: ws }, () =>
        table([
          ['WORKLOAD', 'TENANT', 'HOST', 'ADDRESS', 'ADDRESS6', 'STATE', 'LABELS'],
          ...ws.map((w) => [
            w.name,
            w.tenant,
            w.host,
            w.address,
            w.address6 ?? '-',
            w.state,
            labelsText(w.labels),
          ]),
        ]),
      );
    }
    case 'show': {
      const { values: v, positionals: p } = parse(args, {}, 1);
      const w = await client(v).showWorkload(p[0]);
      return out(v, w, () => workloadText(w));
    }
    case 'delete': {
      const { values: v, positionals: p } = parse(args, {}, 1);
      const r = await client(v).deleteWorkload(p[0]);
      return out(v, r, () => `workload ${r.name} deleted (${r.timings.total ?? '?'} ms)`);
    }
    case 'migrate': {
      const { values: v, positionals: p } = parse(args, { to: { type: 'string' } }, 1);
      const w = await client(v).migrateWorkload(p[0], required(v, 'to'));
      return out(v, w, () => workloadText(w));
    }
  }
  throw new TgError('TG_ERR_USAGE', `unknown workload command '${sub ?? ''}'\n${CONTROL_USAGE}`);
}

async function policy(sub: string | undefined, args: string[]): Promise<number> {
  switch (sub) {
    case 'set': {
      const { values: v, positionals: p } = parse(args, { file: { type: 'string' } }, 1);
      const file = typeof v.file === 'string' ? v.file : 0;
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (err) {
        throw new TgError('TG_ERR_USAGE', `cannot read the policy document: ${(err as Error).message}`);
      }
      let doc: unknown;
      try {
        doc = JSON.parse(text);
      } catch (err) {
        throw new TgError(
          'TG_ERR_INVALID_ARGUMENT',
          `the policy document is not JSON: ${(err as Error).message}`,
        );
      }
      const r = await client(v).setPolicy(p[0], doc);
      return out(v, r, () => `policy of tenant ${r.tenant} set (pushed to ${r.pushedTo.length} NIC(s))`);
    }
    case 'show': {
      const { values: v, positionals: p } = parse(args, {}, 1);
      const r = await client(v).getPolicy(p[0]);
      return out(v, r, () => JSON.stringify(r.document, null, 2));
    }
  }
  throw new TgError('TG_ERR_USAGE', `unknown policy command '${sub ?? ''}'\n${CONTROL_USAGE}`);
}

async function flows(args: string[]): Promise<number> {
  const { values: v } = parse(
    args,
    { tenant: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' } },
    0,
  );
  const q: { tenant?: string; since?: string; limit?: number } = {};
  if (typeof v.tenant === 'string') q.tenant = v.tenant;
  if (typeof v.since === 'string') q.since = v.since;
  if (typeof v.limit === 'string') {
    const n = Number(v.limit);
    if (!Number.isInteger(n) || n < 1)
      throw new TgError('TG_ERR_USAGE', '--limit must be a positive integer');
    q.limit = n;
  }
  const r = await client(v).flows(q);
  return out(v, r, () =>
    [
      ...r.flows.map((f) => JSON.stringify(f)),
      ...Object.entries(r.hosts).map(([h, s]) => `# ${h}: ${s}`),
    ].join('\n'),
  );
}

async function keys(args: string[]): Promise<number> {
  const { values: v, positionals: p } = parse(args, { nic: { type: 'string' } }, 1);
  const r = await client(v).keys(p[0], v.nic as string | undefined);
  return out(v, r, () =>
    table([
      ['ID', 'KIND', 'FINGERPRINT', 'CREATED', 'NIC'],
      ...r.keys.map((k) => [
        String(k.id ?? ''),
        String(k.kind ?? k.type ?? ''),
        String(k.fingerprint ?? ''),
        String(k.created ?? k.createdAt ?? ''),
        String(k.nic ?? '-'),
      ]),
    ]),
  );
}

async function service(sub: string | undefined, args: string[]): Promise<number> {
  switch (sub) {
    case 'create': {
      const { values: v, positionals: p } = parse(
        args,
        {
          tenant: { type: 'string' },
          selector: { type: 'string', multiple: true },
          port: { type: 'string', multiple: true },
        },
        1,
      );
      const selector = parseLabels((v.selector as string[] | undefined) ?? [], 'selector');
      if (Object.keys(selector).length === 0)
        throw new TgError('TG_ERR_USAGE', `--selector k=v is required\n${CONTROL_USAGE}`);
      const ports = (v.port as string[] | undefined) ?? [];
      if (ports.length === 0)
        throw new TgError('TG_ERR_USAGE', `--port PORT/tcp|udp is required\n${CONTROL_USAGE}`);
      const s = await client(v).createService({ tenant: required(v, 'tenant'), name: p[0], selector, ports });
      return out(
        v,
        s,
        () =>
          `service ${s.name} created in tenant ${s.tenant}: ${s.address}${s.address6 !== undefined ? `, ${s.address6}` : ''} (${s.name}.${s.tenant}.tg) ports ${s.ports
            .map((x) => `${x.port}/${x.protocol}`)
            .join(',')} selector ${labelsText(s.selector)}`,
      );
    }
    case 'list': {
      const { values: v } = parse(args, { tenant: { type: 'string' } }, 0);
      const ss = await client(v).listServices(typeof v.tenant === 'string' ? v.tenant : undefined);
      return out(v, { services: ss }, () =>
        table([
          ['TENANT', 'SERVICE', 'ADDRESS', 'PORTS', 'SELECTOR'],
          ...ss.map((s) => [
            s.tenant,
            s.name,
            s.address,
            s.ports.map((x) => `${x.port}/${x.protocol}`).join(','),
            labelsText(s.selector),
          ]),
        ]),
      );
    }
    case 'show': {
      const { values: v, positionals: p } = parse(args, { tenant: { type: 'string' } }, 1);
      const s = await client(v).showService(required(v, 'tenant'), p[0]);
      return out(v, s, () =>
        [
          `service ${s.name} (${s.name}.${s.tenant}.tg)`,
          `  address   ${s.address}${s.address6 !== undefined ? `, ${s.address6}` : ''}`,
          `  ports     ${s.ports.map((x) => `${x.port}/${x.protocol}`).join(',')}`,
          `  selector  ${labelsText(s.selector)}`,
          ...Object.entries(s.nics).map(([h, n]) => {
            const eps = (n as { endpoints?: { workload: string }[] } | null)?.endpoints;
            return `  ${h.padEnd(9)} ${eps === undefined ? String(n) : eps.map((e) => e.workload).join(',') || '-'}`;
          }),
        ].join('\n'),
      );
    }
    case 'delete': {
      const { values: v, positionals: p } = parse(args, { tenant: { type: 'string' } }, 1);
      const s = await client(v).deleteService(required(v, 'tenant'), p[0]);
      return out(v, s, () => `service ${s.name} deleted from tenant ${s.tenant}`);
    }
  }
  throw new TgError('TG_ERR_USAGE', `unknown service command '${sub ?? ''}'\n${CONTROL_USAGE}`);
}

function duration(seconds: number): string {
  const s = Math.abs(seconds);
  const text =
    s < 120
      ? `${s}s`
      : s < 7200
        ? `${Math.round(s / 60)}m`
        : s < 172800
          ? `${Math.round(s / 3600)}h`
          : `${Math.round(s / 86400)}d`;
  return seconds < 0 ? `${text} ago` : text;
}

export function statusText(st: InstallationStatus): string {
  const o = st.orchestrator;
  const last =
    o.lastReconcile === null
      ? 'none yet'
      : `last ${o.lastReconcile.ms} ms, ${o.lastReconcile.errors} errors${o.lastReconcile.unreachable.length > 0 ? `, unreachable: ${o.lastReconcile.unreachable.join(', ')}` : ''}`;
  const lines = [
    `orchestrator  ok, revision ${o.revision}, up ${duration(o.uptimeSeconds)}, API ${o.tls ? 'over mTLS' : 'plain HTTP (--insecure)'}; ${o.reconcilePasses} reconciliation passes (${last})`,
    `hosts         ${st.hosts.length}`,
  ];
  for (const h of st.hosts) {
    const nic = h.nic.reachable
      ? `NIC ok (data plane ${h.nic.dataPlane ? 'on' : 'OFF'}, up ${duration(h.nic.uptimeSeconds)}, ${h.nic.workloads} workloads, ${h.nic.tenants} tenants, ${h.nic.remotePeers} fabric peers, ${h.nic.keys} keys, ${h.nic.drops.total} drops)`
      : `NIC UNREACHABLE (${h.nic.error})`;
    const vs = h.vswitch.reachable
      ? `vSwitch ok (${h.vswitch.instances} instances)`
      : `vSwitch UNREACHABLE (${h.vswitch.error})`;
    lines.push(`  ${h.name}  ${nic}; ${vs}`);
  }
  const states = Object.entries(st.workloads.byState)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  lines.push(
    `tenants       ${st.tenants.count} (${st.tenants.withPolicy} with a policy)`,
    `workloads     ${st.workloads.count}${states === '' ? '' : ` (${states})`}`,
    `certificates  ${st.certificates.length === 0 ? 'none (no mTLS)' : ''}`.trimEnd(),
  );
  for (const c of st.certificates)
    lines.push(
      `  ${c.holder}  ${c.spiffeId ?? '-'}  expires ${c.notAfter} (${c.secondsLeft < 0 ? `EXPIRED ${duration(c.secondsLeft)}` : `in ${duration(c.secondsLeft)}`})`,
    );
  const byHost = Object.entries(st.drops.byHost)
    .map(([h, n]) => `${h} ${n}`)
    .join(', ');
  lines.push(`drops         ${st.drops.total}${byHost === '' ? '' : ` (${byHost})`}`);
  return lines.join('\n');
}

async function status(args: string[]): Promise<number> {
  const { values: v } = parse(args, {}, 0);
  const st = await client(v).status();
  const certFile = operatorCertFile(v);
  if (certFile !== null && existsSync(certFile)) {
    const c: CertificateExpiry | null = certificateExpiry('operator', readText(certFile, 'the certificate'));
    if (c !== null) st.certificates.push(c);
  }
  return out(v, st, () => statusText(st));
}

async function consoleCommand(sub: string | undefined, args: string[]): Promise<number> {
  if (sub !== 'login')
    throw new TgError('TG_ERR_USAGE', `unknown console command '${sub ?? ''}'\n${CONTROL_USAGE}`);
  const { values: v } = parse(args, {}, 0);
  const r = await client(v).consoleLogin();
  return out(v, r, () => `${r.url}\n(one use, valid until ${r.expiresAt})`);
}

/** Runs one command group: `group` is tenant, host, workload, service, policy, flows, keys, status or console. */
export async function runGroup(group: string, args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${CONTROL_USAGE}\n`);
    return 0;
  }
  const [sub, ...rest] = args;
  switch (group) {
    case 'tenant':
      return tenant(sub, rest);
    case 'host':
      return host(sub, rest);
    case 'workload':
      return workload(sub, rest);
    case 'service':
      return service(sub, rest);
    case 'policy':
      return policy(sub, rest);
    case 'flows':
      return flows(args);
    case 'keys':
      return keys(args);
    case 'status':
      return status(args);
    case 'console':
      return consoleCommand(sub, rest);
  }
  throw new TgError('TG_ERR_USAGE', `unknown command '${group}'\n${CONTROL_USAGE}`);
}

export function run(args: string[]): Promise<number> {
  const [group, ...rest] = args;
  return runGroup(group ?? '', rest);
}
