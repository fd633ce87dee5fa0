// `tenguard cni install`: writes the plugin executable (a shim that runs this installation's
// bin/tenguard.js with the runtime's environment and stdin) and a conflist naming it.
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type CniConfig, parseCniConfig } from './config.js';
import { CNI_VERSION } from './spec.js';

export const PLUGIN_TYPE = 'tenguard';
export const DEFAULT_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_CONF_DIR = '/etc/cni/net.d';

export interface InstallOptions {
  binDir: string;
  confDir: string;
  /** The network's name (podman: `--network NAME`). */
  network: string;
  tenant?: string;
  host: string;
  orchestrator: string;
  mtls?: { cert: string; key: string; caBundle: string };
  /** The node binary and the tenguard entry the shim runs. */
  nodePath: string;
  tenguardBin: string;
}

const shellQuote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;

function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/** Writes `<binDir>/tenguard` and `<confDir>/<network>.conflist`; returns their paths and the plugin config. */
export function installCni(o: InstallOptions): { plugin: string; conflist: string; config: CniConfig } {
  const plugin: Record<string, unknown> = {
    type: PLUGIN_TYPE,
    ...(o.tenant !== undefined ? { tenant: o.tenant } : {}),
    host: o.host,
    orchestrator: o.orchestrator,
    ...(o.mtls !== undefined ? { mtls: o.mtls } : {}),
  };
  // Checked as the plugin will check it (with the conflist's shared keys).
  const config = parseCniConfig(
    Buffer.from(JSON.stringify({ cniVersion: CNI_VERSION, name: o.network, ...plugin })),
  );
  mkdirSync(o.binDir, { recursive: true });
  mkdirSync(o.confDir, { recursive: true });
  const shim = `#!/bin/sh\n# tenguard CNI plugin: runs tenguard with the runtime's CNI_* environment and stdin.\nexec ${shellQuote(o.nodePath)} ${shellQuote(o.tenguardBin)} cni\n`;
  const pluginPath = join(o.binDir, PLUGIN_TYPE);
  writeAtomic(pluginPath, shim, 0o755);
  const conflist = { cniVersion: CNI_VERSION, name: o.network, plugins: [plugin] };
  const conflistPath = join(o.confDir, `${o.network}.conflist`);
  writeAtomic(conflistPath, `${JSON.stringify(conflist, null, 2)}\n`, 0o644);
  return { plugin: pluginPath, conflist: conflistPath, config };
}
