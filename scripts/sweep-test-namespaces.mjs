// The test tiers' backstop for their namespaces (scripts/test.sh).
//   --record FILE  writes the names of the namespaces and root-namespace links there now;
//   --sweep FILE [--interrupted]
//                  removes every namespace and root link named tg... that is not in FILE,
//                  with the processes inside it.
// Each test removes what it made, also after a failure. That teardown never runs when the
// runner itself is ended by a signal (a CI timeout, Ctrl-C), and a test whose teardown is
// missing leaves its objects behind; the sweep removes both. After a run that ended by
// itself, anything it had to remove is a leak: it names it and exits 1. After an interrupted
// run it exits 0.
//
// A lab's objects (P and P-* for a lab prefix P) go through destroyLab, which also ends the
// lab's processes and removes its state file; other names (a bench's own namespaces) are
// removed one by one. A prefix is handed to destroyLab only when nothing recorded belongs to
// it, so a lab that was there before the run is never touched.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { belongsToLab, destroyLab, listNamespaces, PREFIX_RE } from '../dist/src/lab/index.js';

function rootLinks() {
  return JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })).map((l) => l.ifname);
}

function names() {
  return [...listNamespaces(), ...rootLinks()];
}

function ip(args) {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch {
    // gone meanwhile, or reported by the final check
  }
}

const [op, file, flag] = process.argv.slice(2);
if (op === '--record' && file) {
  writeFileSync(file, `${names().join('\n')}\n`);
  process.exit(0);
}
if (op !== '--sweep' || !file) {
  console.error('usage: sweep-test-namespaces.mjs --record FILE | --sweep FILE [--interrupted]');
  process.exit(2);
}
const before = new Set(readFileSync(file, 'utf8').split('\n').filter(Boolean));
const fresh = () => names().filter((n) => n.startsWith('tg') && !before.has(n));
const found = fresh();
if (found.length === 0) process.exit(0);

for (const prefix of new Set(found.map((n) => n.split('-')[0]))) {
  if (!PREFIX_RE.test(prefix) || [...before].some((n) => belongsToLab(prefix, n))) continue;
  try {
    await destroyLab(prefix);
  } catch (err) {
    console.error(`test: removing lab ${prefix}: ${err.message}`);
  }
}
const namespaces = new Set(listNamespaces());
for (const n of fresh()) {
  if (!namespaces.has(n)) {
    ip(['link', 'del', n]);
    continue;
  }
  let pids = '';
  try {
    pids = execFileSync('ip', ['netns', 'pids', n], { encoding: 'utf8' });
  } catch {
    // no such namespace any more
  }
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  ip(['netns', 'del', n]);
}
const left = fresh();
const shown = (list) => list.slice(0, 10).join(', ') + (list.length > 10 ? `, ... (${list.length} in all)` : '');
const interrupted = flag === '--interrupted';
console.error(
  `test: ${interrupted ? 'the run was interrupted; removed what its tests had made' : 'tests left namespaces or links behind (a teardown is missing); removed'}: ${shown(found)}` +
    (left.length > 0 ? `; could not remove: ${shown(left)}` : ''),
);
process.exit(interrupted && left.length === 0 ? 0 : 1);
