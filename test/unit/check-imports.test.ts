// scripts/check-imports.mjs on small trees: a folder-level cycle, production code importing
// the lab or the tests, and a file a room's README does not list as public are each reported
// (exit 1); a tree that keeps the rules passes, and so does this repository.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPT = join(REPO, 'scripts/check-imports.mjs');
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'tg-imports-'));
  dirs.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

function check(root?: string): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, root === undefined ? [SCRIPT] : [SCRIPT, root], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

test('this repository keeps the rules', () => {
  const r = check();
  assert.equal(r.code, 0, r.out);
});

test('a tree that keeps the rules passes', () => {
  const r = check(
    tree({
      'src/net/ip.ts': 'export const a = 1;\n',
      'src/nic/agent.ts': "import { a } from '../net/ip.js';\nexport const b = a;\n",
      'src/lab/build.ts': "import { b } from '../nic/agent.js';\nexport const c = b;\n",
      'test/unit/x.test.ts': "import { c } from '../../src/lab/build.js';\n",
    }),
  );
  assert.equal(r.code, 0, r.out);
});

test('a cycle between two rooms is reported with the imports that make it', () => {
  const r = check(
    tree({
      'src/nic/a.ts': "import { y } from '../vswitch/b.js';\nexport const x = y;\n",
      'src/vswitch/b.ts': "export const y = 1;\nexport type T = import('../nic/a.js').X;\n",
    }),
  );
  assert.equal(r.code, 1);
  assert.match(r.out, /import cycle between rooms nic, vswitch/);
  assert.match(r.out, /src\/nic\/a\.ts -> src\/vswitch\/b\.ts/);
});

test('production code importing the lab or the tests is reported', () => {
  const r = check(
    tree({
      'src/lab/run.ts': 'export const run = 1;\n',
      'src/nic/a.ts': "import { run } from '../lab/run.js';\nimport { h } from '../../test/helpers/h.js';\n",
      'test/helpers/h.ts': 'export const h = 1;\n',
    }),
  );
  assert.equal(r.code, 1);
  assert.match(r.out, /src\/nic\/a\.ts: production code imports src\/lab\//);
  assert.match(r.out, /src\/nic\/a\.ts: imports the tests/);
});

test("a file the room's README does not list as public is reported; tests may use it", () => {
  const r = check(
    tree({
      'src/protocol/README.md': '# protocol\n\nPublic surface: `engine.ts`. Imports: nothing.\n',
      'src/protocol/engine.ts': 'export const e = 1;\n',
      'src/protocol/noise.ts': 'export const n = 1;\n',
      'src/device/d.ts':
        "import { e } from '../protocol/engine.js';\nimport { n } from '../protocol/noise.js';\n",
      'test/unit/noise.test.ts': "import { n } from '../../src/protocol/noise.js';\n",
    }),
  );
  assert.equal(r.code, 1);
  assert.match(
    r.out,
    /src\/device\/d\.ts: imports src\/protocol\/noise\.ts, which src\/protocol\/README\.md does not list/,
  );
  assert.doesNotMatch(r.out, /engine\.ts, which/);
  assert.doesNotMatch(r.out, /noise\.test/);
});
