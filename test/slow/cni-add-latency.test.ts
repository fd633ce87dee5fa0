// ADD-to-first-packet through the CNI plugin: COUNT (default 50) plain CNI ADD calls of the
// installed plugin executable (environment + stdin, as a runtime calls it) into namespaces this
// test made as a runtime would, each timed from the call to the first echo reply from a
// same-tenant anchor, alternating between two hosts; beside it, in the same run, the
// orchestrator API's spin-up to first packet (no plugin process) and PODMAN (default 5)
// `podman run` to first packet. Prints medians, the ratio CNI/API and where the time goes: the
// plugin's own stages (TENGUARD_CNI_TRACE), the orchestrator's spin-up steps, and the wait from
// the plugin's answer to the first reply next to the same probe with the sessions up.
//
// The target is a median under 250 ms on a quiet machine (measured under
// `flock /tmp/tg-bench.lock`; the figures are in src/cni/README.md). On a loaded 2-core CI
// machine everything here is a process start or a round trip through other processes, so the
// median asserted is TG_CNI_ADD_MEDIAN_MS (default 1000); the figure is in the diagnostic.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { percentile } from '../../src/bench/spinup.js';
import { CNI_TRACE_ENV } from '../../src/cli/cni.js';
import { workloadName } from '../../src/cni/plugin.js';
import { listNamespaces } from '../../src/lab/index.js';
import type { WorkloadRecord } from '../../src/orchestrator/model.js';
import { run } from '../../src/util/exec.js';
import { callPlugin, cniPrefix } from '../helpers/cni.js';
import { ALLOW_WITHIN, type OrchLab, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { CNI_CACHE, cleanCniCache, Podman } from '../helpers/podman.js';

const COUNT = Number(process.env.TG_CNI_ADD_COUNT ?? 50);
const PODMAN = Number(process.env.TG_CNI_PODMAN_COUNT ?? 5);
const MEDIAN_BOUND_MS = Number(process.env.TG_CNI_ADD_MEDIAN_MS ?? 1000);
const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const prefix = cniPrefix();
let L: OrchLab | undefined;
let dir = '';
let P: Podman | undefined;
let cacheExisted = true;

/**
 * ms from t0 to the first echo reply from `target` inside `ns`: one ping process sending every
 * 10 ms until a reply comes (a lost or queued echo costs 10 ms, not a 1 s timeout).
 */
async function firstReply(
  ns: string,
  target: string,
  t0: number,
  timeoutMs = 10_000,
): Promise<number | null> {
  while (performance.now() - t0 < timeoutMs) {
    const left = Math.max(1, Math.ceil((timeoutMs - (performance.now() - t0)) / 1000));
    const r = await run(
      'ip',
      ['netns', 'exec', ns, 'ping', '-n', '-q', '-i', '0.01', '-c', '1', '-w', String(left), target],
      { timeoutMs: timeoutMs + 5000 },
    );
    if (r.code === 0) return Math.round(performance.now() - t0);
    // ping exits at once while the namespace has no route yet.
    await new Promise((res) => setTimeout(res, 10));
  }
  return null;
}

const med = (v: number[]): number =>
  percentile(
    [...v].sort((a, b) => a - b),
    50,
  );

/** Median of each key over a list of records of numbers. */
function medians(rows: Record<string, number>[]): Record<string, number> {
  const keys = new Set(rows.flatMap((r) => Object.keys(r)));
  return Object.fromEntries(
    [...keys].map((k) => [k, med(rows.map((r) => r[k]).filter((x) => typeof x === 'number'))]),
  );
}

before(async () => {
  cacheExisted = existsSync(CNI_CACHE);
  L = await startOrchLab(prefix);
  await L.client.createTenant({ name: 'bench', pool: '100.64.100.0/22' });
  await L.client.setPolicy('bench', ALLOW_WITHIN('bench'));
  dir = mkdtempSync(join(tmpdir(), `${prefix}-lat-`));
  P = new Podman(dir);
  for (const host of ['h1', 'h2']) {
    const r = await run(process.execPath, [
      BIN,
      'cni',
      'install',
      '--tenant',
      'bench',
      '--host',
      host,
      '--network',
      `${prefix}-${host}`,
      '--bin-dir',
      P.binDir,
      '--conf-dir',
      P.confDir,
      '--orchestrator',
      L.orch.socket,
    ]);
    assert.equal(r.code, 0, r.stderr);
  }
});

after(async () => {
  await P?.cmd(['rm', '-f', '-a', '-t', '2']).catch(() => undefined);
  await stopOrchLab(L, prefix);
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
  cleanCniCache(prefix, cacheExisted);
  const left = (await listNamespaces()).filter((n) => n.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
});

test(`CNI ADD to first packet over ${COUNT} ADDs, API spin-up and podman beside it`, {
  timeout: 30 * 60_000,
}, async (t) => {
  const c = L!.client;
  const anchor: WorkloadRecord = await c.createWorkload({ tenant: 'bench', name: 'anchor', host: 'h1' });
  const cni: number[] = [];
  const addMs: number[] = [];
  // Per ADD: the plugin's own stage times (ms since its process started), the orchestrator's
  // spin-up steps, and the wait from the plugin's answer to the first reply.
  const plugin: Record<string, number>[] = [];
  const orch: Record<string, number>[] = [];
  const afterAdd: number[] = [];
  const probe: number[] = [];
  for (let i = 0; i < COUNT; i++) {
    const host = i % 2 === 0 ? 'h1' : 'h2';
    const ns = `${prefix}-rt-${i}`;
    assert.equal((await run('ip', ['netns', 'add', ns])).code, 0);
    const id = `${(i + 1).toString(16).padStart(12, '0')}ff`;
    const conf = JSON.stringify({
      cniVersion: '1.0.0',
      name: `${prefix}-${host}`,
      type: 'tenguard',
      tenant: 'bench',
      host,
      orchestrator: L!.orch.socket,
    });
    const env = { CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: 'eth0' };
    const t0 = performance.now();
    const r = await callPlugin(
      `${P!.binDir}/tenguard`,
      { ...env, CNI_COMMAND: 'ADD', [CNI_TRACE_ENV]: '1' },
      conf,
    );
    assert.equal(r.code, 0, r.stdout);
    addMs.push(Math.round(r.ms));
    const ms = await firstReply(ns, anchor.address, t0);
    assert.ok(ms !== null, `ADD ${i}: no reply`);
    cni.push(ms);
    afterAdd.push(Math.round(ms - r.ms));
    // The same probe once the sessions are up: what of afterAdd is the probe itself.
    const t1 = performance.now();
    const again = await firstReply(ns, anchor.address, t1);
    assert.ok(again !== null, `ADD ${i}: no second reply`);
    probe.push(again);
    const tr = /\{"cniTrace":(\{[^}]*\})\}/.exec(r.stderr);
    assert.ok(tr !== null, `ADD ${i}: no trace on stderr: ${r.stderr.slice(0, 300)}`);
    const stages = JSON.parse(tr[1]) as Record<string, number>;
    plugin.push({
      bootstrap: stages.bootstrap,
      load: stages.loaded - stages.bootstrap,
      clientSetup: stages.client - stages.loaded,
      orchestratorCall: stages.done - stages.client,
      spawnAndExit: r.ms - stages.done,
    });
    orch.push((await c.showWorkload(workloadName(id, 'eth0'))).timings);
    const d = await callPlugin(`${P!.binDir}/tenguard`, { ...env, CNI_COMMAND: 'DEL' }, conf);
    assert.equal(d.code, 0, d.stdout);
    await run('ip', ['netns', 'del', ns]);
  }
  // The orchestrator API alone (no plugin process, tenguard's own namespaces), same probe.
  const api: number[] = [];
  const apiSteps: Record<string, number>[] = [];
  for (let i = 0; i < COUNT; i++) {
    const t0 = performance.now();
    const w = await c.createWorkload({ tenant: 'bench', name: `api-${i}`, host: i % 2 === 0 ? 'h1' : 'h2' });
    const ms = await firstReply(w.netns, anchor.address, t0);
    assert.ok(ms !== null, `API ${i}: no reply`);
    api.push(ms);
    apiSteps.push(w.timings);
    await c.deleteWorkload(w.name);
  }
  await P!.importBusybox(`localhost/${prefix}-bb`);
  const pod: number[] = [];
  for (let i = 0; i < PODMAN; i++) {
    const name = `${prefix}-p${i}`;
    const t0 = performance.now();
    const r = await P!.cmd(
      P!.runArgs(name, `${prefix}-h${(i % 2) + 1}`, `localhost/${prefix}-bb`, ['sleep', '600']),
    );
    assert.equal(r.code, 0, r.stderr);
    const sk = await P!.cmd(['inspect', '--format', '{{.NetworkSettings.SandboxKey}}', name]);
    const ns = sk.stdout.trim().replace('/run/netns/', '');
    const ms = await firstReply(ns, anchor.address, t0, 20_000);
    assert.ok(ms !== null, `podman ${i}: no reply`);
    pod.push(ms);
    await P!.cmd(['rm', '-f', '-t', '1', name]);
  }
  await c.deleteWorkload('anchor');
  const fig = {
    cni_add_to_first_packet_ms_median: med(cni),
    cni_add_to_first_packet_ms_p95: percentile(
      [...cni].sort((a, b) => a - b),
      95,
    ),
    cni_add_call_ms_median: med(addMs),
    cni_after_add_to_first_reply_ms_median: med(afterAdd),
    probe_with_sessions_up_ms_median: med(probe),
    cni_plugin_stage_ms_medians: medians(plugin),
    cni_orchestrator_step_ms_medians: medians(orch),
    api_orchestrator_step_ms_medians: medians(apiSteps),
    api_spinup_to_first_packet_ms_median: med(api),
    ratio_cni_over_api: Math.round((med(cni) / med(api)) * 100) / 100,
    podman_run_to_first_packet_ms_median: med(pod),
    count: COUNT,
    podman_count: PODMAN,
  };
  process.stderr.write(`cni-add-latency figures (shared 2-core machine, noisy): ${JSON.stringify(fig)}\n`);
  t.diagnostic(
    `CNI ADD-to-first-packet median ${fig.cni_add_to_first_packet_ms_median} ms over ${COUNT} ADDs ` +
      `(target 250 ms quiet; bound here ${MEDIAN_BOUND_MS} ms); API ${fig.api_spinup_to_first_packet_ms_median} ms; ` +
      `podman run ${fig.podman_run_to_first_packet_ms_median} ms (same run)`,
  );
  assert.equal(cni.length, COUNT);
  assert.ok(
    fig.cni_add_to_first_packet_ms_median < MEDIAN_BOUND_MS,
    `median ${fig.cni_add_to_first_packet_ms_median} ms over ${COUNT} ADDs, bound ${MEDIAN_BOUND_MS} ms`,
  );
});
