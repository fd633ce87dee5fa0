// The deployment files: the systemd units pass `systemd-analyze verify` (where systemd-analyze
// is installed; otherwise the parser check below stands alone) and carry the hardening; the
// Kubernetes manifest's objects pass the Kubernetes object schemas of kubernetes-models
// (JSON schemas generated from the Kubernetes OpenAPI document, one class per kind).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DaemonSet, StatefulSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Namespace, ServiceAccount } from 'kubernetes-models/v1';
import { parseAllDocuments } from 'yaml';
import { run } from '../../src/util/exec.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SYSTEMD = join(ROOT, 'deploy/systemd');
const K8S = join(ROOT, 'deploy/kubernetes/tenguard.yaml');

/** Sections -> key -> values of a unit file (the systemd.syntax subset the units use). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const s = /^\[([A-Za-z]+)\]$/.exec(line);
    if (s !== null) {
      section = new Map();
      out.set(s[1], section);
      return;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (kv === null || section === undefined)
      throw new Error(`line ${i + 1}: not a key=value in a section: ${raw}`);
    section.set(kv[1], [...(section.get(kv[1]) ?? []), kv[2]]);
  });
  return out;
}

const units = readdirSync(SYSTEMD).filter((f) => f.endsWith('.service'));
const CAPS: Record<string, string> = {
  'tenguard-nic.service': '',
  'tenguard-vswitchd.service': 'CAP_NET_ADMIN CAP_SYS_ADMIN',
  'tenguard-orchestrator.service': 'CAP_SYS_ADMIN CAP_NET_ADMIN',
};

test('systemd units: every daemon is restarted when it fails; the vSwitch daemon within a second', () => {
  for (const u of units) {
    const svc = parseUnit(readFileSync(join(SYSTEMD, u), 'utf8')).get('Service');
    assert.deepEqual(svc?.get('Restart'), ['on-failure'], `${u}: Restart=`);
    assert.ok((svc?.get('RestartSec') ?? []).length === 1, `${u}: RestartSec=`);
  }
  const v = parseUnit(readFileSync(join(SYSTEMD, 'tenguard-vswitchd.service'), 'utf8'));
  assert.deepEqual(v.get('Service')?.get('RestartSec'), ['500ms']);
  assert.deepEqual(v.get('Unit')?.get('StartLimitBurst'), ['10']);
});

test('systemd units: one per daemon, hardened, with only the capabilities each needs', () => {
  assert.deepEqual(units.sort(), Object.keys(CAPS).sort());
  for (const u of units) {
    const p = parseUnit(readFileSync(join(SYSTEMD, u), 'utf8'));
    const svc = p.get('Service');
    assert.ok(svc !== undefined && p.has('Unit') && p.has('Install'), `${u}: sections`);
    for (const [k, v] of [
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['LimitCORE', '0'],
    ])
      assert.deepEqual(svc.get(k), [v], `${u}: ${k}=${v}`);
    assert.deepEqual(svc.get('CapabilityBoundingSet'), [CAPS[u]], `${u}: capabilities`);
    assert.match(svc.get('ExecStart')?.[0] ?? '', /^\/usr\/bin\/node \/opt\/tenguard\/bin\/tenguard\.js /);
  }
});

test('systemd units pass systemd-analyze verify (a broken unit does not)', async (t) => {
  const which = await run('sh', ['-c', 'command -v systemd-analyze']);
  if (which.code !== 0) {
    t.diagnostic('systemd-analyze is not installed: the parser check above stands alone');
    return;
  }
  const r = await run('systemd-analyze', ['verify', ...units.map((u) => join(SYSTEMD, u))], {
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', 'no warnings');
  // The check can fail: an unknown key is reported.
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'tgcn-unit-'));
  try {
    const bad = join(dir, 'tenguard-bad.service');
    writeFileSync(
      bad,
      readFileSync(join(SYSTEMD, 'tenguard-nic.service'), 'utf8').replace(
        '[Service]',
        '[Service]\nNoNewPrivilege=yes',
      ),
    );
    const b = await run('systemd-analyze', ['verify', bad], { timeoutMs: 60_000 });
    assert.match(b.stderr, /Unknown key/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const MODELS: Record<string, new (d: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'apps/v1/DaemonSet': DaemonSet,
  'apps/v1/StatefulSet': StatefulSet,
};

function docs(): Record<string, unknown>[] {
  return parseAllDocuments(readFileSync(K8S, 'utf8')).map((d) => {
    assert.equal(d.errors.length, 0, String(d.errors[0]));
    return d.toJSON() as Record<string, unknown>;
  });
}

function validate(doc: Record<string, unknown>): void {
  const M = MODELS[`${doc.apiVersion}/${doc.kind}`];
  if (M === undefined) throw new Error(`no schema for ${doc.apiVersion}/${doc.kind}`);
  new M(doc as never).validate();
}

test('Kubernetes manifest: every object passes its Kubernetes schema', () => {
  const all = docs();
  assert.deepEqual(all.map((d) => d.kind).sort(), [
    'ClusterRole',
    'ClusterRoleBinding',
    'DaemonSet',
    'Namespace',
    'ServiceAccount',
    'StatefulSet',
  ]);
  for (const d of all) validate(d);
  const ds = all.find((d) => d.kind === 'DaemonSet') as {
    spec: {
      template: { spec: { initContainers: { args: string[] }[]; containers: { command: string[] }[] } };
    };
  };
  assert.match(ds.spec.template.spec.initContainers[0].args.join(' '), /cni install --tenant-from-namespace/);
  assert.ok(ds.spec.template.spec.containers[0].command.includes('vswitchd'));
});

test('Kubernetes manifest: the schema check refuses a broken object', () => {
  const ds = structuredClone(docs().find((d) => d.kind === 'DaemonSet')!) as {
    spec: { template: { spec: { containers: unknown } } };
  };
  ds.spec.template.spec.containers = 'vswitchd';
  assert.throws(() => validate(ds as unknown as Record<string, unknown>));
  const noSelector = structuredClone(docs().find((d) => d.kind === 'DaemonSet')!) as {
    spec: Record<string, unknown>;
  };
  delete noSelector.spec.selector;
  assert.throws(() => validate(noSelector as unknown as Record<string, unknown>));
});
