// `tenguard vswitchd`: the vSwitch daemon of one host. It runs in the host's network namespace
// and keeps one tunnel device per workload (each its own process), driven through its API.
import { parseArgs } from 'node:util';
import { setDumpable } from '../native/dumpable.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';
import { JsonApiServer } from '../util/http-json.js';
import { logger } from '../util/log.js';
import { VSWITCH_MAX_BODY_BYTES, vswitchRoutes } from '../vswitch/api.js';
import { DEFAULT_TUNNEL_MTU, IFNAME_PREFIX_RE, VSwitchDaemon } from '../vswitch/daemon.js';
import { ProcessPlatform } from '../vswitch/platform.js';

const USAGE = `usage: tenguard vswitchd --api-socket PATH --ifname-prefix PREFIX [--mtu M]

Runs the vSwitch daemon: one tunnel device per workload, created on request through the API
(HTTP+JSON on the Unix socket PATH), its TUN moved into the workload's namespace as tg0.
Device interfaces are named PREFIX<n> before the move (PREFIX matches ${IFNAME_PREFIX_RE}; it
must be unique on the machine). Stops every instance on SIGTERM/SIGINT.
`;

export async function run(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        'api-socket': { type: 'string' },
        'ifname-prefix': { type: 'string' },
        mtu: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const apiSocket = values['api-socket'] as string | undefined;
  if (apiSocket === undefined) throw new TgError('TG_ERR_USAGE', `--api-socket is required\n${USAGE}`);
  if (!apiSocket.startsWith('/'))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--api-socket must be an absolute path, not '${apiSocket}'`);
  const prefix = values['ifname-prefix'] as string | undefined;
  if (prefix === undefined) throw new TgError('TG_ERR_USAGE', `--ifname-prefix is required\n${USAGE}`);
  const mtuText = values.mtu as string | undefined;
  const mtu = mtuText === undefined ? DEFAULT_TUNNEL_MTU : Number(mtuText);
  if (!Number.isInteger(mtu) || mtu < 1280 || mtu > 1500)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--mtu must be an integer from 1280 to 1500');
  requireRoot('tenguard vswitchd');
  // PSKs and fresh private keys pass through this process on their way to the devices.
  setDumpable(false);

  const log = logger('vswitchd');
  const daemon = new VSwitchDaemon({ platform: new ProcessPlatform(log), log, ifnamePrefix: prefix, mtu });
  const api = await JsonApiServer.listen({
    socketPath: apiSocket,
    routes: vswitchRoutes(daemon, Date.now()),
    log,
    maxBodyBytes: VSWITCH_MAX_BODY_BYTES,
  });
  log.info({ api: apiSocket, prefix }, 'vSwitch daemon serving');
  const why = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ why }, 'vSwitch daemon stopping');
  await api.close();
  await daemon.close();
  return 0;
}
