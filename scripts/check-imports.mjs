#!/usr/bin/env node
// Checks the rooms of src/ (one folder each) against the rules in src/README.md:
//   1. no folder-level import cycle: if a file in src/A imports src/B, nothing in src/B may
//      import (directly or through other folders) src/A;
//   2. production code never reaches into the lab, the tools or the tests: src/ outside
//      TOOL_ROOMS imports neither those rooms nor test/;
//   3. nothing under src/ imports test/;
//   4. a room's files are imported from other rooms of src/ only where the room's README.md
//      names them in its "Public surface:" paragraph (a room without one, or whose paragraph
//      says "every file", is open). Tests may use any file.
// Imports are read from the TypeScript sources (static `import`/`export ... from` and
// dynamic `import('...')` with a literal path), type-only imports included: a type is part of
// a room's surface as much as a function. Exits 1 with one line per violation.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (or, for the script's own tests, the tree given as the first argument). */
const ROOT = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
/** Rooms that drive production code as an operator would; production code never imports them. */
const TOOL_ROOMS = new Set(['lab', 'demo', 'bench', 'cli']);
/**
 * Import edges (file -> room) exempt from the rules, each with its reason. Keep this empty:
 * an entry is a known debt, to be removed with the code that causes it.
 */
const ALLOWED = new Map([]);

function walk(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s[^'"]*?\sfrom\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Room of a repository-relative path: 'src/<room>/...' -> room, 'test/...' -> 'test'. */
function roomOf(rel) {
  const parts = rel.split('/');
  if (parts[0] === 'src') return parts.length > 2 ? parts[1] : '(src)';
  return parts[0];
}

/** Room -> the file names its README declares public, or null when the room is open. */
function publicSurface(room) {
  const readme = join(ROOT, 'src', room, 'README.md');
  if (!existsSync(readme)) return null;
  const m = /^Public surface:([\s\S]*?)(?:\n\s*\n|Imports:|Imported by:|(?![\s\S]))/m.exec(readFileSync(readme, 'utf8'));
  if (m === null || /every file/.test(m[1])) return null;
  return new Set([...m[1].matchAll(/`([\w.-]+\.ts)`/g)].map((x) => x[1]));
}
const surfaces = new Map();
function isPublic(target) {
  const [, room, ...rest] = target.split('/');
  if (!surfaces.has(room)) surfaces.set(room, publicSurface(room));
  const surface = surfaces.get(room);
  return surface === null || surface.has(rest.join('/'));
}

const violations = [];
const edges = new Map(); // room -> Map(room -> first file edge, for the message)
const usedAllowances = new Set();
for (const abs of walk(join(ROOT, 'src'))) {
  const file = relative(ROOT, abs);
  const from = roomOf(file);
  const text = readFileSync(abs, 'utf8');
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2];
    if (!spec.startsWith('.')) continue;
    const target = relative(ROOT, resolve(dirname(abs), spec)).replace(/\.js$/, '.ts');
    const to = roomOf(target);
    if (to === from) continue;
    const key = `${file} -> ${to}`;
    if (ALLOWED.has(key)) {
      usedAllowances.add(key);
      continue;
    }
    if (to === 'test') violations.push(`${file}: imports the tests (${target})`);
    else if (target.startsWith('src/') && !isPublic(target))
      violations.push(
        `${file}: imports ${target}, which src/${to}/README.md does not list as public (list it there if it is meant to be)`,
      );
    else if (!TOOL_ROOMS.has(from) && TOOL_ROOMS.has(to))
      violations.push(`${file}: production code imports src/${to}/ (${target})`);
    if (!edges.has(from)) edges.set(from, new Map());
    const out = edges.get(from);
    if (!out.has(to)) out.set(to, `${file} -> ${target}`);
  }
}

// Folder-level cycles: strongly connected components (Tarjan) with more than one room.
let index = 0;
const stack = [];
const info = new Map();
function strong(v) {
  info.set(v, { index, low: index, onStack: true });
  index++;
  stack.push(v);
  for (const w of edges.get(v)?.keys() ?? []) {
    if (!info.has(w)) {
      strong(w);
      info.get(v).low = Math.min(info.get(v).low, info.get(w).low);
    } else if (info.get(w).onStack) info.get(v).low = Math.min(info.get(v).low, info.get(w).index);
  }
  if (info.get(v).low === info.get(v).index) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      info.get(w).onStack = false;
      component.push(w);
    } while (w !== v);
    if (component.length > 1) {
      const inside = new Set(component);
      const shown = [];
      for (const a of component)
        for (const [b, example] of edges.get(a) ?? []) if (inside.has(b)) shown.push(`    ${example}`);
      violations.push(`import cycle between rooms ${component.sort().join(', ')}:\n${shown.join('\n')}`);
    }
  }
}
for (const v of edges.keys()) if (!info.has(v)) strong(v);

if (process.argv[2] === undefined)
  for (const key of ALLOWED.keys())
    if (!usedAllowances.has(key)) violations.push(`allowance no longer needed, remove it: ${key}`);

if (violations.length > 0) {
  for (const v of violations) process.stderr.write(`check-imports: ${v}\n`);
  process.exit(1);
}
const rooms = [...edges.keys()].sort();
process.stdout.write(
  `check-imports: ${rooms.length} rooms, no cycle, no reach into the lab or the tests, only public files imported across rooms\n`,
);
