// Wake placement (native/wake.c): the switch arms only within its gates (runnable tasks, the
// thread's policy, the right to return from SCHED_IDLE), a send it arms still delivers and
// leaves the thread at SCHED_OTHER, and a process that may not leave SCHED_IDLE never arms.
// Loopback only.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../../src/native/binding.js';
import { NativeUdpSocket } from '../../src/native/index.js';
import { ENDPOINT_SIZE, encodeEndpoint } from '../../src/net/endpoint.js';

const native = loadNative();
const a = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
const b = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
after(() => {
  native.setWakeHere(false, 1);
  a.close();
  b.close();
});

/** The scheduling policy of this process's main thread (field 41 of /proc/PID/task/PID/stat). */
function policy(): number {
  const stat = readFileSync(`/proc/${process.pid}/task/${process.pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3.
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3]);
}
const SCHED_OTHER = 0;
const SCHED_BATCH = 3;

function sendOne(marker: number): void {
  const slab = Buffer.alloc(64, marker);
  const eps = Buffer.alloc(ENDPOINT_SIZE);
  encodeEndpoint(`127.0.0.1:${b.localPort}`, eps, 0);
  assert.equal(a.sendBatch(slab, new Uint32Array([0]), new Uint32Array([32]), eps, 1), 1);
}

function receiveOne(): number {
  const slab = Buffer.alloc(2048);
  const lengths = new Uint32Array(1);
  const eps = Buffer.alloc(ENDPOINT_SIZE);
  for (let i = 0; i < 1000; i++) {
    if (b.recvBatch(slab, 2048, 0, 1, lengths, eps) === 1) return slab[0];
  }
  return -1;
}

test('wake placement: an armed send delivers and leaves the thread at SCHED_OTHER', () => {
  assert.equal(native.wakePlacementAllowed(), true, 'root may return from SCHED_IDLE');
  assert.equal(policy(), SCHED_OTHER);
  // No limit on runnable tasks: arms (the test runs as root, SCHED_OTHER).
  assert.equal(native.setWakeHere(true, 1_000_000), true);
  for (let i = 1; i <= 3; i++) {
    sendOne(i);
    assert.equal(policy(), SCHED_OTHER, `after send ${i}`);
    assert.equal(receiveOne(), i);
  }
  assert.equal(native.setWakeHere(false, 1), false, 'off always disarms');
  // This thread is running, so at least one task is: a limit of 0 never arms.
  assert.equal(native.setWakeHere(true, 0), false);
  assert.throws(() => native.setWakeHere('yes' as unknown as boolean, 1), TypeError);
  assert.throws(() => native.setWakeHere(true, -1), RangeError);
});

test('wake placement: a thread that does not run SCHED_OTHER is never armed', () => {
  execFileSync('chrt', ['--batch', '-p', '0', String(process.pid)]);
  try {
    assert.equal(policy(), SCHED_BATCH);
    assert.equal(native.setWakeHere(true, 1_000_000), false);
  } finally {
    execFileSync('chrt', ['--other', '-p', '0', String(process.pid)]);
  }
  assert.equal(policy(), SCHED_OTHER);
});

test('wake placement: a process that may not leave SCHED_IDLE never arms', () => {
  const binding = join(dirname(fileURLToPath(import.meta.url)), '../../src/native/binding.js');
  const script = `import { loadNative } from ${JSON.stringify(binding)};
const n = loadNative();
console.log(JSON.stringify([n.wakePlacementAllowed(), n.setWakeHere(true, 1000000)]));`;
  // Root without CAP_SYS_NICE (dropped from the bounding set, so the exec'd node lacks it) and
  // with RLIMIT_NICE 0, as in a container that drops the capability.
  const out = execFileSync(
    'setpriv',
    [
      '--bounding-set=-sys_nice',
      '--inh-caps=-sys_nice',
      'prlimit',
      '--nice=0',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ],
    { encoding: 'utf8' },
  );
  assert.deepEqual(JSON.parse(out), [false, false]);
});
