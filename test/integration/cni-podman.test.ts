// podman (Debian 4.3.1) with its CNI backend runs containers from a locally imported busybox
// image on tenant networks of two lab hosts through the tenguard plugin: same tenant on one
// host and across hosts ping and exchange TCP, cross-tenant is blocked (same host and across
// hosts), captures on both host links and both NICs' fabric ports carry only WireGuard (a
// random marker sent over TCP is absent there and present in a capture inside a container),
// `podman rm` wipes each container's keys on its NIC (the inventory before/after),
// `podman stop` + `start` works, nothing is left behind (no namespace, workload, vSwitch
// instance, NIC workload, capture or podman state). All of podman's state lives in a
// temporary directory.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { analyseCapture, type Capture, startCapture } from '../../src/demo/capture.js';
import { listNamespaces } from '../../src/lab/index.js';
import { run } from '../../src/util/exec.js';
import { cniPrefix } from '../helpers/cni.js';
import { ALLOW_WITHIN, type OrchLab, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { CNI_CACHE, cleanCniCache, Podman } from '../helpers/podman.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const prefix = cniPrefix();
const IMAGE = `localhost/${prefix}-busybox`;
let L: OrchLab | undefined;
let P: Podman | undefined;
let dir = '';
/** The namespaces podman made for this test's containers (other podman users may run now). */
const sandboxes = new Set<string>();
let cacheExisted = true;
const figures: Record<string, number> = {};
const captures: Capture[] = [];
/** Sent over TCP between containers; must never appear on a host link or the fabric. */
const MARKER = `tgcn${randomBytes(12).toString('hex')}`;

const net = (tenant: string, host: string) => `${prefix}-${tenant}-${host}`;

async function ipOf(name: string): Promise<string> {
  const r = await P!.cmd(['inspect', '--format', '{{json .NetworkSettings.Networks}}', name]);
  assert.equal(r.code, 0, r.stderr);
  const nets = JSON.parse(r.stdout) as Record<string, { IPAddress: string }>;
  const ip = Object.values(nets)[0]?.IPAddress;
  assert.match(ip ?? '', /^100\.64\./, `${name} has a tenant address: ${r.stdout}`);
  return ip;
}

async function pingFrom(name: string, ip: string, count = 3): Promise<number> {
  const r = await P!.cmd(['exec', name, 'ping', '-c', String(count), '-W', '2', ip], 60_000);
  const m = /(\d+) packets received/.exec(r.stdout);
  return m === null ? 0 : Number(m[1]);
}

async function tcpEcho(name: string, ip: string, text: string): Promise<string> {
  const r = await P!.cmd(['exec', name, 'sh', '-c', `echo ${text} | nc -w 3 ${ip} 7000`], 60_000);
  return r.stdout.trim();
}

async function psks(host: string): Promise<string[]> {
  const { keys } = await L!.client.keys(host);
  return keys
    .filter((k) => k.kind === 'workload-psk')
    .map((k) => String(k.workload))
    .sort();
}

/** The tenguard workload of a container (the plugin names it after the container's ID). */
async function workloadOf(name: string): Promise<string> {
  const r = await P!.cmd(['inspect', '--format', '{{.Id}}', name]);
  assert.equal(r.code, 0, r.stderr);
  return `c-${r.stdout.trim().slice(0, 12)}`;
}

async function netnsOf(name: string): Promise<string> {
  const r = await P!.cmd(['inspect', '--format', '{{.NetworkSettings.SandboxKey}}', name]);
  assert.equal(r.code, 0, r.stderr);
  const ns = r.stdout.trim().replace('/run/netns/', '');
  sandboxes.add(ns);
  return ns;
}

async function capture(where: string, ns: string, iface: string): Promise<Capture> {
  const c = await startCapture(where, ns, iface, join(dir, `${captures.length}.pcap`));
  captures.push(c);
  return c;
}

async function start(name: string, network: string): Promise<void> {
  const r = await P!.cmd(
    P!.runArgs(name, network, IMAGE, ['sh', '-c', 'while true; do nc -l -p 7000 -e /bin/cat; done']),
  );
  assert.equal(r.code, 0, `podman run ${name}: ${r.stderr}`);
  figures[`podman_run_ms_${name.slice(prefix.length + 1)}`] = Math.round(r.ms);
  await netnsOf(name);
}

before(async () => {
  cacheExisted = existsSync(CNI_CACHE);
  L = await startOrchLab(prefix);
  await L.client.createTenant({ name: 'acme', pool: '100.64.40.0/24' });
  await L.client.createTenant({ name: 'blue', pool: '100.64.41.0/24' });
  await L.client.setPolicy('acme', ALLOW_WITHIN('acme'));
  await L.client.setPolicy('blue', ALLOW_WITHIN('blue'));
  dir = mkdtempSync(join(tmpdir(), `${prefix}-podman-`));
  P = new Podman(dir);
  for (const [tenant, host] of [
    ['acme', 'h1'],
    ['acme', 'h2'],
    ['blue', 'h1'],
  ]) {
    const r = await run(process.execPath, [
      BIN,
      'cni',
      'install',
      '--tenant',
      tenant,
      '--host',
      host,
      '--network',
      net(tenant, host),
      '--bin-dir',
      P.binDir,
      '--conf-dir',
      P.confDir,
      '--orchestrator',
      L.orch.socket,
    ]);
    assert.equal(r.code, 0, r.stderr);
  }
  await P.importBusybox(IMAGE);
});

after(async () => {
  for (const c of captures) await c.stop().catch(() => undefined);
  if (P !== undefined) {
    await P.cmd(['rm', '-f', '-a', '-t', '5']).catch(() => undefined);
    await P.cmd(['rmi', '-a', '-f']).catch(() => undefined);
  }
  await stopOrchLab(L, prefix);
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
  // Our networks' cached results (DEL removes them; a failure may not), and the cache
  // directory itself when this test made it.
  cleanCniCache(prefix, cacheExisted);
  process.stderr.write(`cni-podman figures: ${JSON.stringify(figures)}\n`);
  const left = (await listNamespaces()).filter((n) => n.startsWith(prefix) || sandboxes.has(n));
  assert.deepEqual(left, [], 'namespaces left behind');
});

test('podman containers on tenant networks of two hosts: traffic, isolation, keys, stop/start, rm', async () => {
  const before1 = await psks('h1');
  const before2 = await psks('h2');
  // Captures from before the first container, so the handshakes are on them too.
  const lab = L!.lab;
  const links: Capture[] = [];
  for (const h of lab.hosts) {
    links.push(await capture(`host link ${h.name}`, h.hostNs, h.pcie.hostIf));
    links.push(await capture(`fabric port of ${h.name}'s NIC`, lab.fabric.ns, h.fabric.bridgeIf));
  }
  const a1 = `${prefix}-a1`;
  const a2 = `${prefix}-a2`;
  const a3 = `${prefix}-a3`;
  const b1 = `${prefix}-b1`;
  await start(a1, net('acme', 'h1'));
  await start(a2, net('acme', 'h1'));
  await start(a3, net('acme', 'h2'));
  await start(b1, net('blue', 'h1'));
  const [ip2, ip3, ipb] = [await ipOf(a2), await ipOf(a3), await ipOf(b1)];
  // Positive control: inside a container the marker is plaintext.
  const control = await capture(`eth0 inside ${a2}`, await netnsOf(a2), 'eth0');
  assert.equal(await pingFrom(a1, ip2), 3, 'same tenant, same host: ping');
  assert.equal(await pingFrom(a1, ip3), 3, 'same tenant, across hosts: ping');
  assert.equal(await tcpEcho(a1, ip2, `${MARKER}-h`), `${MARKER}-h`, 'TCP same host');
  assert.equal(await tcpEcho(a1, ip3, `${MARKER}-x`), `${MARKER}-x`, 'TCP across hosts');
  assert.equal(await pingFrom(a1, ipb, 2), 0, 'cross-tenant ping blocked (same host)');
  assert.equal(await tcpEcho(a1, ipb, MARKER), '', 'cross-tenant TCP blocked (same host)');
  assert.equal(await pingFrom(b1, ip3, 2), 0, 'cross-tenant ping blocked (across hosts)');
  for (const c of [control, ...links]) await c.stop();
  const ctl = await analyseCapture(control.where, control.file, Buffer.from(MARKER));
  assert.ok(ctl.markerFound, `control: the marker is plaintext on ${ctl.where} (${ctl.frames} frames)`);
  for (const c of links) {
    const a = await analyseCapture(c.where, c.file, Buffer.from(MARKER));
    const detail = `${a.where}: ${JSON.stringify(a)}`;
    assert.ok(!a.markerFound, `no plaintext marker on ${detail}`);
    assert.ok(a.udpPackets > 0 && a.wgPackets === a.udpPackets, `every UDP packet is WireGuard on ${detail}`);
    assert.ok((a.types['1'] ?? 0) > 0 && (a.types['4'] ?? 0) > 0, `handshakes and transport on ${detail}`);
    assert.equal(a.otherFrames, 0, `nothing but WireGuard, ARP and ICMP on ${detail}`);
    figures[`wg_packets_${a.where.replaceAll(/[^a-z0-9]+/gi, '_')}`] = a.wgPackets;
  }
  const during1 = await psks('h1');
  assert.equal(during1.length, before1.length + 3, 'one session key per container on h1');
  const w = new Map<string, string>();
  for (const c of [a1, a2, a3, b1]) w.set(c, await workloadOf(c));
  for (const c of [a1, a2, b1]) assert.ok(during1.includes(w.get(c)!), `${c}'s key on NIC h1`);
  assert.ok((await psks('h2')).includes(w.get(a3)!), `${a3}'s key on NIC h2`);
  // stop + start: DEL, then ADD in a new namespace.
  const stop = await P!.cmd(['stop', '-t', '2', a3]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.deepEqual(await psks('h2'), before2, 'stop wiped the key on h2');
  const st = await P!.cmd(['start', a3]);
  assert.equal(st.code, 0, st.stderr);
  await netnsOf(a3);
  const ip3b = await ipOf(a3);
  assert.equal(await pingFrom(a1, ip3b), 3, 'ping after stop + start');
  assert.equal(await tcpEcho(a1, ip3b, 'tgcn-restarted'), 'tgcn-restarted');
  // rm wipes each container's keys, and only its own.
  const left = [a1, a2, a3, b1];
  const hostOf = (c: string): string => (c === a3 ? 'h2' : 'h1');
  while (left.length > 0) {
    const c = left.shift()!;
    const r = await P!.cmd(['rm', '-f', '-t', '2', c]);
    assert.equal(r.code, 0, r.stderr);
    const inv = await psks(hostOf(c));
    assert.ok(!inv.includes(w.get(c)!), `podman rm ${c}: its key gone from NIC ${hostOf(c)}`);
    for (const o of left.filter((x) => hostOf(x) === hostOf(c)))
      assert.ok(inv.includes(w.get(o)!), `podman rm ${c}: the key of ${o} is still there`);
  }
  assert.deepEqual(await psks('h1'), before1, 'NIC h1 inventory back to before');
  assert.deepEqual(await psks('h2'), before2, 'NIC h2 inventory back to before');
  assert.deepEqual(await L!.client.listWorkloads(), [], 'no workload left');
  for (const h of ['h1', 'h2']) {
    assert.deepEqual(await L!.agents.vswitch(h).list(), [], `no vSwitch instance left on ${h}`);
    assert.deepEqual(await L!.agents.nic(h).workloads(), [], `no workload left on the NIC of ${h}`);
  }
  const ps = await P!.cmd(['ps', '-a', '--format', '{{.Names}}']);
  assert.equal(ps.stdout.trim(), '', 'no container left');
});
