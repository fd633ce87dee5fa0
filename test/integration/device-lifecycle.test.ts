// The life of a device process, as wireguard-go lives it: its interface can be moved into a
// workload namespace while the process and its UDP socket stay where they started; deleting
// the interface ends the process cleanly; without -f it detaches into the background.
// Pairs and implementations come from TG_DEVICE_IMPLS (see device-harness.ts).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, describe, it, test } from 'node:test';
import {
  addNamespace,
  configureAddresses,
  configureWg,
  createTestbed,
  destroyTestbed,
  deviceArgv,
  startDevice,
  type Testbed,
  uapiSocketPath,
} from '../../src/bench/testbed.js';
import { run, runIn, runInOk } from '../../src/util/exec.js';
import {
  devicePrefix,
  implementationsOf,
  onlyPeer,
  processAlive,
  roles,
  selectCombinations,
  TUNNEL_MTU,
  uapiSocketOwner,
  waitExit,
  waitFor,
} from '../helpers/device-harness.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const { combinations, note } = await selectCombinations();
const implementations = implementationsOf(combinations);
const testbeds: Testbed[] = [];

async function testbed(tag: string, index: number): Promise<Testbed> {
  const tb = await createTestbed(devicePrefix(tag, index), { index });
  testbeds.push(tb);
  return tb;
}

after(async () => {
  for (const tb of testbeds) await destroyTestbed(tb);
});

test('device lifecycle: implementation pairs covered', (t) => {
  t.diagnostic(`${note}; single-device tests: ${implementations.join(', ')}`);
  assert.ok(combinations.length > 0, 'no implementation pair selected');
});

async function linkIn(ns: string, dev: string): Promise<boolean> {
  return (await run('ip', ['-n', ns, 'link', 'show', 'dev', dev])).code === 0;
}

async function namespacePids(ns: string): Promise<number[]> {
  return (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
}

describe('device lifecycle: interfaces moved into workload namespaces', () => {
  for (const [index, combo] of combinations.entries()) {
    it(`${combo.name}: the tunnel works from the workload namespaces, the devices stay where they started`, async () => {
      const tb = await testbed('m', index);
      const { initiator, responder } = roles(tb);
      const wi = await addNamespace(tb, 'w');
      const wr = await addNamespace(tb, 'v');
      await startDevice(initiator, combo.initiator);
      await startDevice(responder, combo.responder);
      await configureWg(initiator, responder, {});
      await configureWg(responder, initiator, { endpoint: false });
      for (const [s, w] of [
        [initiator, wi],
        [responder, wr],
      ] as const) {
        await runInOk(s.ns, 'ip', ['link', 'set', 'dev', s.tun, 'netns', w]);
        await configureAddresses(w, s, TUNNEL_MTU);
        assert.equal(await linkIn(s.ns, s.tun), false, `${s.tun} is still in ${s.ns}`);
        assert.equal(await linkIn(w, s.tun), true, `${s.tun} did not arrive in ${w}`);
      }
      // A device may take a moment to notice that its interface is up again over there.
      assert.ok(await pingUntilReply(wi, responder.tunV4, 15_000), 'no reply through the moved interfaces');
      for (const [from, to, what] of [
        [wi, responder.tunV4, 'initiator workload -> responder workload, IPv4'],
        [wr, initiator.tunV4, 'responder workload -> initiator workload, IPv4'],
        [wi, responder.tunV6, 'initiator workload -> responder workload, IPv6'],
        [wr, initiator.tunV6, 'responder workload -> initiator workload, IPv6'],
      ] as const) {
        const r = await ping(from, to, { count: 3 });
        assert.equal(r.received, 3, `${what}: ${r.received}/3 replies`);
      }
      // The processes (and so their UDP sockets) are still in the namespaces of the wire: the
      // responder learnt the initiator's endpoint as the initiator's wire address.
      for (const s of [initiator, responder]) {
        const pid = s.proc?.pid;
        assert.ok(
          pid !== undefined && (await namespacePids(s.ns)).includes(pid),
          `${s.tun}'s device left ${s.ns}`,
        );
        assert.equal(s.proc?.exitCode, null, `${s.tun}'s device exited`);
      }
      assert.equal((await onlyPeer(responder)).endpoint, `${initiator.wireV4}:${initiator.port}`);
      const udp = await runInOk(responder.ns, 'ss', ['-Hunl', `sport = :${responder.port}`]);
      assert.ok(udp.trim() !== '', `no UDP socket on port ${responder.port} in ${responder.ns}`);
    });
  }
});

describe('device lifecycle: one device', () => {
  for (const [index, impl] of implementations.entries()) {
    it(`${impl}: deleting the interface ends the device with exit code 0 and removes its UAPI socket`, async () => {
      const tb = await testbed('x', index);
      const s = tb.a;
      await startDevice(s, impl);
      await configureWg(s, tb.b, {});
      await configureAddresses(s.ns, s, TUNNEL_MTU);
      const proc = s.proc;
      assert.ok(proc, 'device not started');
      assert.ok(existsSync(uapiSocketPath(s.tun)));
      await runInOk(s.ns, 'ip', ['link', 'del', 'dev', s.tun]);
      const code = await waitExit(proc, 10_000);
      assert.equal(
        code,
        0,
        code === null ? 'device still running 10 s after ip link del' : `exit code ${code}`,
      );
      assert.ok(
        await waitFor(() => !existsSync(uapiSocketPath(s.tun)), 2000),
        `${uapiSocketPath(s.tun)} left behind`,
      );
    });

    it(`${impl}: without -f the command returns, a detached process serves the UAPI until the interface is deleted`, async () => {
      const tb = await testbed('d', index);
      const s = tb.a;
      const env = { ...process.env };
      delete env.LOG_LEVEL; // wireguard-go keeps its parent's stdout/stderr when it is set
      const launcher = spawn('ip', ['netns', 'exec', s.ns, ...deviceArgv(impl, s.tun, false)], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env,
      });
      let stderr = '';
      launcher.stderr.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-2000);
      });
      const code = await waitExit(launcher, 15_000);
      launcher.stderr.destroy();
      if (code === null) launcher.kill('SIGKILL');
      assert.equal(code, 0, `the command did not return 0 within 15 s (${code}): ${stderr.trim()}`);
      assert.ok(existsSync(uapiSocketPath(s.tun)), 'no UAPI socket after the command returned');

      const pid = await uapiSocketOwner(s.ns, s.tun);
      assert.ok(pid !== null, `no process in ${s.ns} holds ${uapiSocketPath(s.tun)}`);
      assert.notEqual(pid, launcher.pid, 'the socket is held by the command we ran, not a detached process');
      assert.ok(await linkIn(s.ns, s.tun), 'no interface');
      // It serves: a configuration written with wg reads back.
      await configureWg(s, tb.b, {});
      const shown = await runIn(s.ns, 'wg', ['show', s.tun, 'listen-port']);
      assert.equal(shown.stdout.trim(), String(s.port), `wg show: ${shown.stderr.trim()}`);

      await runInOk(s.ns, 'ip', ['link', 'del', 'dev', s.tun]);
      assert.ok(await waitFor(() => !processAlive(pid), 10_000), `detached device ${pid} still running`);
      assert.ok(
        await waitFor(() => !existsSync(uapiSocketPath(s.tun)), 2000),
        `${uapiSocketPath(s.tun)} left behind`,
      );
    });
  }
});
