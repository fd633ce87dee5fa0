// The memory scan the demo runs against the orchestrator must be able to fail: a child
// process that holds a planted key (as raw bytes in a Buffer, as a base64 string in a JSON
// object) is found in every form, and a key it never saw is not.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { test } from 'node:test';
import { keyNeedles, scanProcessMemory } from '../../src/demo/memscan.js';

const HOLDER = `
const raw = Buffer.from(process.argv[1], 'hex');
const kept = Buffer.alloc(32); raw.copy(kept);
const doc = JSON.parse(JSON.stringify({ psk: kept.toString('base64') }));
globalThis.keep = [kept, doc];
process.stdout.write('ready\\n');
setInterval(() => {}, 1000);
`;

test('the scan finds a key planted in another process (raw and base64) and not one it never held', async () => {
  const planted = randomBytes(32);
  const absent = randomBytes(32);
  // The key reaches the child in hex on its command line: hex is not searched for it below.
  const child = spawn(process.execPath, ['-e', HOLDER, planted.toString('hex')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const [line] = (await once(child.stdout!, 'data')) as [Buffer];
    assert.match(line.toString(), /ready/);
    const needles = [...keyNeedles('planted', planted), ...keyNeedles('absent', absent)];
    const r = scanProcessMemory(child.pid!, needles);
    assert.ok(r.bytesScanned > 10 * 1024 * 1024, `only ${r.bytesScanned} bytes scanned`);
    assert.ok((r.found['planted (raw)'] ?? 0) >= 1, JSON.stringify(r.found));
    assert.ok((r.found['planted (base64)'] ?? 0) >= 1, JSON.stringify(r.found));
    for (const form of ['raw', 'base64', 'hex']) assert.equal(r.found[`absent (${form})`], undefined, form);
  } finally {
    child.kill('SIGKILL');
  }
});

test('the scan of this process finds a key held in a Buffer', () => {
  // This process: a key in a Buffer is found, and counting is stable between two scans.
  const key = randomBytes(32);
  const holder = Buffer.alloc(32);
  key.copy(holder);
  const a = scanProcessMemory(process.pid, keyNeedles('self', holder)).found['self (raw)'] ?? 0;
  assert.ok(a >= 1);
  holder.fill(0);
  key.fill(0);
});
