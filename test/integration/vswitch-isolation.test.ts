// The vSwitch daemon in both isolations (`--isolation process` and `--isolation shared`) in a
// real lab, the same checks for each: workloads spun up by the orchestrator (src/lab/control.ts) reach their
// tenant's other workloads and not another tenant's; one instance whose tg0 is deleted
// (its device fails) is reported crashed alone while the others carry on, and restarts with a
// new key; private keys appear in no log, command line or environment; delete removes tg0 and
// the UAPI socket. Each mode's throughput (iperf3, TCP and small UDP datagrams) is measured
// in the same run, so the two can be compared.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_WARM as WARM_DEFAULT } from '../../src/cli/vswitchd.js';
import type { LabAgents } from '../../src/lab/agents.js';
import { LabControlPlane, type PlacedWorkload, plannedWorkloads } from '../../src/lab/control.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { uapiGet } from '../../src/uapi/client.js';
import { uapiSocketPath } from '../../src/uapi/server.js';
import { run } from '../../src/util/exec.js';
import { findPrivateKeys, nicPrefix } from '../helpers/nic.js';
import { ping, pingUntilReply } from '../helpers/ping.js';
import { childPids, type Isolation, iperf, rssKb, startAgents } from '../helpers/vswitch.js';

const figures: Record<string, Record<string, number>> = {};

after(() => {
  process.stdout.write(`vswitch isolation figures: ${JSON.stringify(figures)}\n`);
});

for (const isolation of ['process', 'shared'] as const satisfies readonly Isolation[]) {
  describe(`vSwitch daemon, --isolation ${isolation}`, () => {
    const prefix = nicPrefix().replace(/^tgn/, 'tgv');
    let lab: LabState;
    let agents: LabAgents;
    let control: LabControlPlane | undefined;
    let specs: PlacedWorkload[];
    /** Every private key the instances had, as public keys (to search for the private ones). */
    const publicKeys: Buffer[] = [];
    const W = (name: string): PlacedWorkload => {
      const w = specs.find((s) => s.name === name);
      assert.ok(w, `no workload ${name}`);
      return w;
    };

    before(async () => {
      lab = await buildLab({ prefix, hosts: 1, tenants: 2, workloads: 2 });
      agents = await startAgents(lab, isolation, { logLevel: 'debug' });
      control = await LabControlPlane.start(lab, agents);
      specs = await control.place(plannedWorkloads(lab));
      for (const i of await agents.vswitch('h1').list()) publicKeys.push(Buffer.from(i.publicKey, 'base64'));
      assert.equal(publicKeys.length, 4);
    });

    after(async () => {
      await control?.close().catch(() => undefined);
      await agents?.stop().catch(() => undefined);
      await destroyLab(prefix).catch(() => undefined);
    });

    test('each workload reaches its tenant and not the other tenant', { timeout: 120_000 }, async () => {
      const list = await agents.vswitch('h1').list();
      assert.equal(list.length, 4);
      for (const i of list) {
        assert.equal(i.state, 'configured');
        if (isolation === 'shared') assert.equal(i.pid, null);
        else assert.ok(i.pid !== null && i.pid !== agents.vswitchds.get('h1')!.pid);
      }
      const vsPid = agents.vswitchds.get('h1')!.pid;
      const kids = await childPids(vsPid);
      const devices = list.map((i) => i.pid).filter((p): p is number => typeof p === 'number');
      if (isolation === 'process') {
        // The instances' devices, plus the warm pool's idle ones (keyless, ready for the next).
        assert.ok(
          devices.every((p) => kids.includes(p)),
          'every instance is a child process of the daemon',
        );
        assert.equal(kids.length, 4 + WARM_DEFAULT, 'four instances and the warm devices');
      } else {
        assert.equal(kids.length, 0);
      }
      figures[`${isolation}Memory`] = {
        vswitchdKb: rssKb(vsPid),
        devicesKb: devices.reduce((sum, p) => sum + rssKb(p), 0),
        nicKb: rssKb(agents.nics.get('h1')!.pid),
      };
      for (const t of ['t1', 't2']) {
        assert.ok(await pingUntilReply(W(`h1-${t}-w1`).ns, W(`h1-${t}-w2`).address, 10_000), `${t} w1 -> w2`);
        assert.equal((await ping(W(`h1-${t}-w2`).ns, W(`h1-${t}-w1`).address, { count: 3 })).received, 3);
      }
      assert.equal((await ping(W('h1-t1-w1').ns, W('h1-t2-w1').address, { count: 2, waitS: 1 })).received, 0);
    });

    test('throughput of one pair (iperf3)', { timeout: 120_000 }, async () => {
      const a = W('h1-t1-w1');
      const b = W('h1-t1-w2');
      const tcp = await iperf(b.ns, b.address, a.ns, { seconds: 3 });
      const udp = await iperf(b.ns, b.address, a.ns, { seconds: 3, udpLength: 64, udpRate: '0' });
      figures[isolation] = {
        tcpMbit: Math.round(tcp.mbitPerSecond),
        udp64PacketsPerSecond: Math.round(udp.packetsPerSecond ?? 0),
        udp64LostPercent: Math.round(udp.lostPercent ?? 0),
      };
      assert.ok(tcp.mbitPerSecond > 1, `TCP ${tcp.mbitPerSecond} Mbit/s`);
      assert.ok((udp.packetsPerSecond ?? 0) > 100, `UDP ${udp.packetsPerSecond} packets/s`);
    });

    test('an instance whose tg0 disappears is crashed alone, counted, and restarts with a new key', {
      timeout: 120_000,
    }, async () => {
      const vs = agents.vswitch('h1');
      const victim = W('h1-t1-w2');
      const before = await vs.get(victim.name);
      await run('ip', ['-n', victim.ns, 'link', 'del', 'dev', 'tg0']);
      const deadline = Date.now() + 10_000;
      while ((await vs.get(victim.name)).state !== 'crashed' && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      const crashed = await vs.get(victim.name);
      assert.equal(crashed.state, 'crashed');
      assert.ok(crashed.exit);
      if (isolation === 'shared') assert.match(crashed.exit.reason ?? '', /^TUN: /);
      const health = (await vs.health()) as { crashed: number; crashes: number; running: number };
      assert.equal(health.crashed, 1);
      assert.equal(health.crashes, 1);
      assert.equal(health.running, 3);
      // The others carry on, in the victim's tenant and in the other.
      assert.equal((await ping(W('h1-t2-w1').ns, W('h1-t2-w2').address, { count: 3 })).received, 3);
      assert.equal((await ping(W('h1-t1-w1').ns, victim.address, { count: 2, waitS: 1 })).received, 0);
      // Restart: a fresh key pair, registered anew with the NIC.
      const restarted = await vs.restart(victim.name);
      assert.notEqual(restarted.publicKey, before.publicKey);
      publicKeys.push(Buffer.from(restarted.publicKey, 'base64'));
      const nic = agents.nic('h1');
      await nic.removeWorkload(victim.name);
      const crypto = await nic.registerWorkload({
        tenant: victim.tenant,
        workload: victim.name,
        address: victim.address,
        vswitchPublicKey: restarted.publicKey,
      });
      await vs.configure(victim.name, {
        nicPublicKey: crypto.nicPublicKey,
        sealedPsk: crypto.sealedPsk,
        nicEndpoint: crypto.nicEndpoint,
      });
      assert.ok(
        await pingUntilReply(W('h1-t1-w1').ns, victim.address, 10_000),
        'restarted instance unreachable',
      );
    });

    test('private keys are in no log, command line or environment; the UAPI holds them', {
      timeout: 60_000,
    }, async () => {
      // The UAPI socket of each device answers with its private key (as wg's does): that is how
      // the keys to look for are known to be real.
      const info = await agents.vswitch('h1').get('h1-t2-w1');
      const snap = await uapiGet(uapiSocketPath(info.ifname));
      assert.ok(snap.privateKey);
      assert.equal(snap.privateKey.length, 32);
      snap.privateKey.fill(0);
      const vsPid = agents.vswitchds.get('h1')!.pid;
      const texts: [string, string][] = [['agent logs', agents.logs()]];
      for (const pid of [vsPid, ...(await childPids(vsPid))])
        for (const what of ['cmdline', 'environ'])
          texts.push([`/proc/${pid}/${what}`, readFileSync(`/proc/${pid}/${what}`, 'latin1')]);
      for (const [where, text] of texts)
        assert.deepEqual(findPrivateKeys(text, publicKeys), [], `a private key in ${where}`);
    });

    test('delete removes tg0 and the UAPI socket; the other instances stay', {
      timeout: 60_000,
    }, async () => {
      const vs = agents.vswitch('h1');
      const gone = W('h1-t2-w2');
      const info = await vs.get(gone.name);
      await vs.delete(gone.name);
      await agents.nic('h1').removeWorkload(gone.name);
      assert.equal((await run('ip', ['-n', gone.ns, 'link', 'show', 'dev', 'tg0'])).code !== 0, true);
      assert.equal(existsSync(uapiSocketPath(info.ifname)), false);
      await assert.rejects(vs.get(gone.name), /no vSwitch instance/);
      assert.equal((await vs.list()).length, 3);
      assert.equal((await ping(W('h1-t1-w2').ns, W('h1-t1-w1').address, { count: 2 })).received, 2);
    });
  });
}
