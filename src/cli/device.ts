// `tenguard device [-f|--foreground] <ifname>`: a WireGuard-compatible userspace device,
// used exactly like `wireguard-go <ifname>`: it creates the TUN, serves the UAPI socket for
// `wg`, detaches into the background unless told not to, and exits when its interface is
// deleted.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Device } from '../device/device.js';
import { checkTunMtu } from '../device/pump.js';
import { DATA_PLANE_NODE_ARGS, tuneRuntimeForDataPlane } from '../device/runtime.js';
import { validateIfname } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';

const USAGE = `usage: tenguard device [-f|--foreground] [--mtu M] [--parent-pipe] <ifname>

Creates the TUN interface <ifname> and runs a WireGuard-protocol device on it, configured
with wg(8) through /var/run/wireguard/<ifname>.sock. Detaches into the background unless
-f is given. Exits when the interface is deleted (ip link del <ifname>).

--parent-pipe  (with -f) also exit when stdin reaches its end: the process that started the
               device holds the other end of a pipe, so the device ends when it does, even
               when it is killed (the vSwitch daemon's devices end with it).
`;

const NOTIFY_ENV = 'TENGUARD_DEVICE_NOTIFY';

export async function run(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1)
    throw new TgError('TG_ERR_USAGE', `expected exactly one interface name\n${USAGE}`);
  const ifname = positionals[0];
  try {
    validateIfname(ifname);
  } catch (err) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', (err as Error).message);
  }
  const mtu = values.mtu === undefined ? undefined : Number(values.mtu);
  if (mtu !== undefined) checkTunMtu(mtu);
  requireRoot('tenguard device');
  if (!values.foreground) return detach(args);
  tuneRuntimeForDataPlane();

  const dev = await Device.start({ ifname, mtu });
  const stop = (): void => void dev.close('signal');
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (values['parent-pipe']) {
    const orphaned = (): void => void dev.close('parent ended');
    process.stdin.once('end', orphaned);
    process.stdin.once('error', orphaned);
    process.stdin.resume();
  }
  if (process.env[NOTIFY_ENV] === '1' && process.send) {
    process.send({ ready: true });
    process.disconnect();
  }
  const why = await dev.stopped;
  process.off('SIGTERM', stop);
  process.off('SIGINT', stop);
  // The pipe would keep the process alive after the device ended for another reason.
  if (values['parent-pipe']) process.stdin.destroy();
  process.stderr.write(`tenguard device ${ifname}: stopped (${why})\n`);
  return 0;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      foreground: { type: 'boolean', short: 'f' },
      mtu: { type: 'string' },
      'parent-pipe': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  });
}

/** Starts the same command in the foreground as a detached child and waits until it serves. */
function detach(args: string[]): Promise<number> {
  const bin = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
  const child = spawn(process.execPath, [...DATA_PLANE_NODE_ARGS, bin, 'device', '-f', ...args], {
    detached: true,
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, [NOTIFY_ENV]: '1' },
  });
  return new Promise((resolve) => {
    child.once('message', () => {
      child.unref();
      child.disconnect();
      resolve(0);
    });
    child.once('exit', (code) => resolve(code ?? 1));
  });
}
