// The package's install script: builds the native addon with node-gyp only when it is missing
// or older than its sources (native/, binding.gyp). An npm install of the checkout, or of the
// checkout as a dependency, must never remove a working addon and then fail to rebuild it
// (node-gyp needs Node's headers, which a fresh cache fetches from the network).
// TENGUARD_NATIVE_REBUILD=1 forces the rebuild.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const addon = join(root, 'build', 'Release', 'tenguard_native.node');
const sources = [join(root, 'binding.gyp'), ...readdirSync(join(root, 'native')).map((f) => join(root, 'native', f))];

function upToDate() {
  if (!existsSync(addon)) return false;
  const built = statSync(addon).mtimeMs;
  return sources.every((f) => statSync(f).mtimeMs <= built);
}

if (process.env.TENGUARD_NATIVE_REBUILD !== '1' && upToDate()) {
  process.stderr.write('tenguard: native addon up to date (TENGUARD_NATIVE_REBUILD=1 forces a rebuild)\n');
} else {
  const r = spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit' });
  process.exitCode = r.status ?? 1;
}
