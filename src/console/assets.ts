// What the console's pages are made of, loaded once at start and served from memory: its own
// files (web/: HTML, one ES module, CSS) and the front-end stack taken from node_modules
// (preact, preact/hooks, htm), whose one bare import ("preact" in hooks) is rewritten to the
// served file so the browser needs no import map (which, as an inline script, a strict
// Content-Security-Policy would have to allow). Source-map comments are dropped (no maps are
// served). Nothing comes from a CDN and nothing is bundled.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TgError } from '../util/errors.js';

export interface Asset {
  /** The URL path it is served at. */
  readonly path: string;
  readonly contentType: string;
  readonly body: string;
}

/** The pages' own files: src/console/web of this checkout (dist/src/console -> src/console). */
export const WEB_DIR = fileURLToPath(new URL('../../../src/console/web/', import.meta.url));

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  mjs: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

const WEB_FILES = ['index.html', 'app.js', 'views.js', 'api.js', 'style.css'];

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new TgError('TG_ERR_CONFIG', `the console cannot read ${path}`, { cause: err });
  }
}

function stripSourceMap(js: string): string {
  return js.replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, '\n');
}

/** A file of an installed package: its root found from where its main entry resolves. */
function resolvePackageFile(pkg: string, relative: string): string {
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve(pkg));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(read(manifest)) as { name?: string }).name === pkg)
      return join(dir, relative);
    const up = dirname(dir);
    if (up === dir) throw new TgError('TG_ERR_CONFIG', `the console cannot find the package ${pkg}`);
    dir = up;
  }
}

export function loadAssets(): Asset[] {
  const own = WEB_FILES.map((f) => ({
    path: f === 'index.html' ? '/console/' : `/console/${f}`,
    contentType: TYPES[f.split('.').pop() ?? ''] ?? 'application/octet-stream',
    body: read(join(WEB_DIR, f)),
  }));
  const preact = stripSourceMap(read(resolvePackageFile('preact', 'dist/preact.mjs')));
  const hooks = stripSourceMap(read(resolvePackageFile('preact', 'hooks/dist/hooks.mjs')));
  const htm = stripSourceMap(read(resolvePackageFile('htm', 'dist/htm.mjs')));
  const rewritten = hooks.replace(/from\s*"preact"/g, 'from"./preact.mjs"');
  if (rewritten.includes('"preact"'))
    throw new TgError('TG_ERR_CONFIG', 'preact/hooks imports preact in a way the console does not know');
  const js = TYPES.mjs;
  return [
    ...own,
    { path: '/console/vendor/preact.mjs', contentType: js, body: preact },
    { path: '/console/vendor/hooks.mjs', contentType: js, body: rewritten },
    { path: '/console/vendor/htm.mjs', contentType: js, body: htm },
  ];
}
