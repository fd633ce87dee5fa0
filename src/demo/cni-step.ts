// The demo's podman step: containers of a real runtime (podman's CNI backend, an image made
// with `podman import` of a busybox-static rootfs, no registry) attached to tenant networks
// of the lab's two hosts through the tenguard CNI plugin: two containers of one tenant on two
// hosts talk (ping, TCP), a container of another tenant gets nothing through, captures on the
// host links and the fabric show only WireGuard while they talk, `podman rm`
// wipes each container's keys on its NIC, and nothing of podman's is left behind (its state
// lives in a temporary directory).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installCni } from '../cni/install.js';
import type { LabCa } from '../lab/ca.js';
import type { LabState } from '../lab/index.js';
import { run } from '../util/exec.js';
import { analyseCapture, type Capture, startCapture } from './capture.js';
import { allowWithinTenant, type DemoControl } from './control.js';
import { BUSYBOX, CNI_CACHE, cleanCniCache, Podman } from './podman.js';
import type { DemoReporter } from './report.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const TENANTS = [
  { name: 'pods-a', pool: '100.64.50.0/24' },
  { name: 'pods-b', pool: '100.64.51.0/24' },
];

export interface PodmanStepContext {
  lab: LabState;
  control: DemoControl;
  report: DemoReporter;
  /** The control plane speaks plain HTTP (--insecure). */
  insecure: boolean;
  /** Under mTLS: the lab's CA, which issues the plugin its identity files. */
  ca?: LabCa;
}

/**
 * The plugin's mTLS files, next to the lab's API sockets (/run: memory, not disk): an identity
 * the orchestrator serves (the lab's operator ID: in the lab the plugin acts for the
 * operator), its key readable by root only, and the trust bundle. Removed with the step.
 */
async function pluginIdentityFiles(
  ca: LabCa,
  socket: string,
): Promise<{ dir: string; files: { cert: string; key: string; caBundle: string } }> {
  const dir = join(dirname(socket), 'cni-identity');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const id = await ca.issue(ca.operatorId, 3600);
  const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), caBundle: join(dir, 'bundle.pem') };
  writeFileSync(files.cert, [id.certificatePem, ...id.chainPem].join(''), { mode: 0o644 });
  writeFileSync(files.key, id.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  writeFileSync(files.caBundle, ca.bundle().pems().join(''), { mode: 0o644 });
  return { dir, files };
}

export async function podmanStep(x: PodmanStepContext): Promise<void> {
  const { lab, control, report } = x;
  report.step('podman containers on tenant networks through the CNI plugin (2 tenants, 2 hosts)');
  if (!x.insecure && x.ca === undefined) {
    report.notShown('podman step under mTLS: no CA to issue the CNI plugin its identity');
    return;
  }
  const missing = [];
  for (const cmd of ['podman', 'runc'])
    if ((await run('sh', ['-c', `command -v ${cmd}`])).code !== 0) missing.push(cmd);
  if (!existsSync(BUSYBOX)) missing.push('busybox-static');
  if (missing.length > 0 || control.socket === undefined) {
    report.check('podman, runc and busybox-static installed (scripts/setup.sh)', false, missing.join(', '));
    return;
  }
  const prefix = lab.prefix;
  // The namespaces podman made for this step's containers (other podman users may run now).
  const sandboxes: string[] = [];
  const cacheExisted = existsSync(CNI_CACHE);
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-podman-`));
  const P = new Podman(dir);
  let identity: Awaited<ReturnType<typeof pluginIdentityFiles>> | undefined;
  const captures: Capture[] = [];
  const marker = `tgpod${randomBytes(12).toString('hex')}`;
  const image = `localhost/${prefix}-busybox`;
  const net = (t: string, h: string): string => `${prefix}-${t}-${h}`;
  try {
    if (!x.insecure && x.ca !== undefined) identity = await pluginIdentityFiles(x.ca, control.socket);
    for (const t of TENANTS) {
      await control.createTenant(t.name, t.pool);
      await control.setPolicy(t.name, allowWithinTenant(t.name));
    }
    for (const [t, h] of [
      ['pods-a', 'h1'],
      ['pods-a', 'h2'],
      ['pods-b', 'h1'],
    ])
      installCni({
        binDir: P.binDir,
        confDir: P.confDir,
        network: net(t, h),
        tenant: t,
        host: h,
        orchestrator: control.socket,
        nodePath: process.execPath,
        tenguardBin: BIN,
        ...(identity !== undefined ? { mtls: identity.files } : {}),
      });
    await P.importBusybox(image);
    const psks = async (h: string): Promise<number> =>
      (await control.keys(h)).filter((k) => k.kind === 'workload-psk').length;
    const before = { h1: await psks('h1'), h2: await psks('h2') };
    // From before the first container, so the handshakes are on them too.
    for (const h of lab.hosts)
      captures.push(
        await startCapture(`host link ${h.name}`, h.hostNs, h.pcie.hostIf, join(dir, `${h.name}.pcap`)),
      );
    const h1 = lab.hosts[0];
    captures.push(
      await startCapture(
        `fabric port of ${h1.name}'s NIC`,
        lab.fabric.ns,
        h1.fabric.bridgeIf,
        join(dir, 'fabric.pcap'),
      ),
    );
    const boxes = [
      { name: `${prefix}-pa1`, network: net('pods-a', 'h1') },
      { name: `${prefix}-pa2`, network: net('pods-a', 'h2') },
      { name: `${prefix}-pb1`, network: net('pods-b', 'h1') },
    ];
    const ips = new Map<string, string>();
    const runMs: number[] = [];
    for (const b of boxes) {
      const r = await P.cmd(
        P.runArgs(b.name, b.network, image, ['sh', '-c', 'while true; do nc -l -p 7000 -e /bin/cat; done']),
      );
      if (r.code !== 0) throw new Error(`podman run ${b.name}: ${r.stderr.trim()}`);
      runMs.push(Math.round(r.ms));
      const sk = await P.cmd(['inspect', '--format', '{{.NetworkSettings.SandboxKey}}', b.name]);
      if (sk.stdout.trim() !== '') sandboxes.push(basename(sk.stdout.trim()));
      const i = await P.cmd(['inspect', '--format', '{{json .NetworkSettings.Networks}}', b.name]);
      ips.set(
        b.name,
        Object.values(JSON.parse(i.stdout) as Record<string, { IPAddress: string }>)[0].IPAddress,
      );
    }
    report.figure('podman_run_ms_median', [...runMs].sort((a, b) => a - b)[1]);
    report.show(boxes.map((b) => `${b.name.padEnd(16)} ${b.network.padEnd(22)} ${ips.get(b.name)}`));
    const [a1, a2, b1] = boxes.map((b) => b.name);
    const ping = async (from: string, to: string, n: number): Promise<number> => {
      const r = await P.cmd(['exec', from, 'ping', '-c', String(n), '-W', '2', ips.get(to)!], 60_000);
      return Number(/(\d+) packets received/.exec(r.stdout)?.[1] ?? 0);
    };
    const tcp = async (from: string, to: string, text: string): Promise<string> =>
      (
        await P.cmd(['exec', from, 'sh', '-c', `echo ${text} | nc -w 3 ${ips.get(to)} 7000`], 60_000)
      ).stdout.trim();
    const p = await ping(a1, a2, 3);
    const t = await tcp(a1, a2, marker);
    report.check(
      'pods-a across hosts: container on h1 -> container on h2',
      p === 3 && t === marker,
      `ping ${p}/3; TCP echo ${t === marker ? 'intact' : `got '${t}'`}`,
    );
    const xp = await ping(a1, b1, 2);
    const xt = await tcp(a1, b1, 'x');
    report.check(
      'pods-a -> pods-b blocked',
      xp === 0 && xt === '',
      `ping ${xp}/2; TCP ${xt === '' ? 'no connection' : 'answered'}`,
    );
    for (const c of captures) await c.stop();
    for (const c of captures) {
      const a = await analyseCapture(c.where, c.file, Buffer.from(marker));
      report.check(
        `podman traffic on the ${a.where}: marker absent, every UDP packet is WireGuard`,
        !a.markerFound && a.udpPackets > 0 && a.wgPackets === a.udpPackets && a.otherFrames === 0,
        `${a.frames} frames, ${a.udpPackets} UDP, ${a.wgPackets} WireGuard; marker ${a.markerFound ? 'FOUND' : 'absent'}; ${a.otherFrames} other frames`,
      );
    }
    const during = { h1: await psks('h1'), h2: await psks('h2') };
    for (const b of boxes) await P.cmd(['rm', '-f', '-t', '2', b.name]);
    const after = { h1: await psks('h1'), h2: await psks('h2') };
    report.check(
      'podman rm wiped the containers’ session keys on the NICs',
      after.h1 === before.h1 &&
        after.h2 === before.h2 &&
        during.h1 === before.h1 + 2 &&
        during.h2 === before.h2 + 1,
      `workload PSKs h1 ${before.h1} -> ${during.h1} -> ${after.h1}, h2 ${before.h2} -> ${during.h2} -> ${after.h2}`,
    );
  } finally {
    for (const c of captures) await c.stop().catch(() => undefined);
    await P.cmd(['rm', '-f', '-a', '-t', '1']).catch(() => undefined);
    await P.cmd(['rmi', '-a', '-f']).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    if (identity !== undefined) rmSync(identity.dir, { recursive: true, force: true });
    cleanCniCache(prefix, cacheExisted);
  }
  const now = new Set(existsSync('/run/netns') ? readdirSync('/run/netns') : []);
  const left = sandboxes.filter((n) => now.has(n));
  report.check(
    'podman left nothing behind',
    left.length === 0,
    left.length === 0 ? 'no runtime namespace, no state directory' : left.join(', '),
  );
}
