// Regression: a workload deleted while its (shared-mode) vSwitch daemon was down left its
// device's UAPI socket file, with no listener, in the socket directory after the daemon came
// back. The daemon now removes, at start, the dead socket files under its own name prefix.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { removeStaleSockets } from '../../src/uapi/server.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-stale-'));

after(() => rmSync(dir, { recursive: true, force: true }));

/** A socket file whose process died without removing it (SIGKILL), as a crashed daemon leaves it. */
async function deadSocket(path: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ],
    { stdio: 'ignore' },
  );
  await new Promise((r) => child.once('exit', r));
  assert.ok(existsSync(path), 'the killed process left its socket file');
}

test('stale UAPI sockets of a dead daemon: removed under its prefix, live ones and others kept', async () => {
  await deadSocket(join(dir, 'tgx-1v0.sock'));
  await deadSocket(join(dir, 'tgx-1v1o.sock'));
  await deadSocket(join(dir, 'tgx-2v0.sock'));
  writeFileSync(join(dir, 'tgx-1vfile.sock'), 'not a socket');
  const live = createServer();
  await new Promise<void>((r) => live.listen(join(dir, 'tgx-1v2.sock'), r));
  try {
    const removed = await removeStaleSockets('tgx-1v', dir);
    assert.deepEqual(removed.sort(), ['tgx-1v0.sock', 'tgx-1v1o.sock']);
    assert.ok(!existsSync(join(dir, 'tgx-1v0.sock')));
    assert.ok(!existsSync(join(dir, 'tgx-1v1o.sock')));
    assert.ok(existsSync(join(dir, 'tgx-1v2.sock')), 'a live device keeps its socket');
    assert.ok(existsSync(join(dir, 'tgx-2v0.sock')), "another daemon's prefix is not touched");
    assert.ok(existsSync(join(dir, 'tgx-1vfile.sock')), 'a file that is not a socket is not touched');
    assert.deepEqual(await removeStaleSockets('tgx-1v', dir), []);
  } finally {
    await new Promise((r) => live.close(r));
  }
});

test('stale UAPI sockets: a missing directory is nothing to do; a bad prefix is refused', async () => {
  assert.deepEqual(await removeStaleSockets('tgx-1v', join(dir, 'absent')), []);
  await assert.rejects(removeStaleSockets('', dir), /prefix/);
  await assert.rejects(removeStaleSockets('../x', dir), /prefix/);
});
