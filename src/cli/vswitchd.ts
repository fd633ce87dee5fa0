// `tenguard vswitchd`: the vSwitch daemon of one host. It runs in the host's network namespace
// and keeps one tunnel device per workload, driven through its API: each device its own
// process (--isolation process, the default) or all inside the daemon (--isolation shared).
import { wipeTlsKey } from '../identity/mtls.js';
import {
  INSECURE_WARNING,
  MTLS_ARG_OPTIONS,
  MTLS_USAGE,
  mtlsConfigFromArgs,
  ServiceMtls,
} from '../identity/service-mtls.js';
import { serviceId } from '../identity/spiffe.js';
import { setDumpable } from '../native/dumpable.js';
import { startHeapTrim } from '../native/heap-trim.js';
import { MAX_TUNNEL_MTU, MIN_LINK_MTU, tunnelMtu } from '../nic/mtu.js';
import { removeStaleSockets } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';
import { JsonApiServer } from '../util/http-json.js';
import { logger } from '../util/log.js';
import { VSWITCH_MAX_BODY_BYTES, vswitchRoutes } from '../vswitch/api.js';
import { DEFAULT_TUNNEL_MTU, IFNAME_PREFIX_RE, VSwitchDaemon } from '../vswitch/daemon.js';
import { ProcessPlatform, type VSwitchPlatform } from '../vswitch/platform.js';
import { WarmPool } from '../vswitch/warm-pool.js';

/** Warm devices kept by a daemon with process isolation. */
export const DEFAULT_WARM = 2;

import { tuneRuntimeForDataPlane } from '../device/runtime.js';
import { SharedPlatform } from '../vswitch/shared-platform.js';
import { apiSocketArg, parseDaemonArgs } from './daemon-args.js';

const ISOLATIONS = ['process', 'shared'] as const;
type Isolation = (typeof ISOLATIONS)[number];
/** Read when --isolation is not given, so a daemon started by a harness can be switched. */
export const ISOLATION_ENV = 'TENGUARD_VSWITCH_ISOLATION';

const USAGE = `usage: tenguard vswitchd --api-socket PATH --ifname-prefix PREFIX
                         [--mtu M | --host-mtu N --fabric-mtu N]
                         [--isolation process|shared] [--warm N]
                         (mTLS options | --insecure)

Runs the vSwitch daemon: one tunnel device per workload, created on request through the API
(HTTP+JSON on the Unix socket PATH), its TUN moved into the workload's namespace as tg0.
Device interfaces are named PREFIX<n> before the move (PREFIX matches ${IFNAME_PREFIX_RE}; it
must be unique on the machine). Stops every instance on SIGTERM/SIGINT.

--mtu M              tg0's MTU in every workload (default ${DEFAULT_TUNNEL_MTU}: for 1,500-byte links).
--host-mtu N --fabric-mtu N
                     derive tg0's MTU from the host link's and the fabric's MTU instead: the
                     smaller one minus 80 (the legs' IPv6-outer overhead), at least 1,280
                     (README, "MTUs of the legs").
--isolation process  each device is its own process (about 50 MB each): one workload's fault
                     or memory bug cannot reach another's keys. The default.
--isolation shared   every device runs inside this daemon (well under 1 MB each): for dense
                     hosts (hundreds to thousands of workloads). A failing device still ends
                     alone and is reported as crashed; a native fault would end them all.
Without the option, ${ISOLATION_ENV} (process|shared) is used if set.
--warm N             (process isolation) keep N started, keyless devices ready, named
                     PREFIX_<n>, so a new instance does not wait for a process to start;
                     default ${DEFAULT_WARM}, 0 turns it off.

With mTLS the daemon enrols as spiffe://TD/service/vswitchd-NAME and serves its API over mTLS
to the allowed clients only.

${MTLS_USAGE}`;

/** tg0's MTU: --mtu, or derived from --host-mtu and --fabric-mtu, or the default. */
function tunnelMtuArg(values: Record<string, unknown>): number {
  const num = (name: string): number | undefined => {
    const t = values[name] as string | undefined;
    if (t === undefined) return undefined;
    if (!/^[0-9]{1,5}$/.test(t)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `--${name} must be a number`);
    return Number(t);
  };
  const mtu = num('mtu');
  const hostLink = num('host-mtu');
  const fabric = num('fabric-mtu');
  if (mtu !== undefined && (hostLink !== undefined || fabric !== undefined))
    throw new TgError('TG_ERR_USAGE', '--mtu or --host-mtu/--fabric-mtu, not both');
  if ((hostLink === undefined) !== (fabric === undefined))
    throw new TgError('TG_ERR_USAGE', '--host-mtu and --fabric-mtu go together');
  if (hostLink !== undefined && fabric !== undefined) return tunnelMtu({ hostLink, fabric });
  if (mtu === undefined) return DEFAULT_TUNNEL_MTU;
  if (!Number.isInteger(mtu) || mtu < MIN_LINK_MTU || mtu > MAX_TUNNEL_MTU)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `--mtu must be an integer from ${MIN_LINK_MTU} to ${MAX_TUNNEL_MTU}`,
    );
  return mtu;
}

export async function run(args: string[]): Promise<number> {
  const values = parseDaemonArgs(
    args,
    {
      'api-socket': { type: 'string' },
      'ifname-prefix': { type: 'string' },
      mtu: { type: 'string' },
      'host-mtu': { type: 'string' },
      'fabric-mtu': { type: 'string' },
      isolation: { type: 'string' },
      warm: { type: 'string' },
      ...MTLS_ARG_OPTIONS,
    },
    USAGE,
  );
  if (values === null) return 0;
  const apiSocket = apiSocketArg(values, USAGE);
  const prefix = values['ifname-prefix'] as string | undefined;
  if (prefix === undefined) throw new TgError('TG_ERR_USAGE', `--ifname-prefix is required\n${USAGE}`);
  const mtu = tunnelMtuArg(values);
  const isolation = (values.isolation as string | undefined) ?? process.env[ISOLATION_ENV] ?? 'process';
  if (!(ISOLATIONS as readonly string[]).includes(isolation))
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `--isolation (or ${ISOLATION_ENV}) must be process or shared, not '${isolation.slice(0, 32)}'`,
    );
  const warmText = values.warm as string | undefined;
  const warm = warmText === undefined ? DEFAULT_WARM : Number(warmText);
  if (!/^[0-9]{1,2}$/.test(warmText ?? '0') || !Number.isInteger(warm) || warm > 64)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--warm must be an integer from 0 to 64');
  const mtlsConfig = mtlsConfigFromArgs(values, (td, host) => serviceId(td, `vswitchd-${host}`).uri);
  requireRoot('tenguard vswitchd');
  tuneRuntimeForDataPlane();
  // PSKs and fresh private keys pass through this process on their way to the devices.
  setDumpable(false);
  startHeapTrim();

  const log = logger('vswitchd');
  if (mtlsConfig === undefined) log.warn(INSECURE_WARNING);
  const mtls =
    mtlsConfig === undefined ? undefined : await ServiceMtls.start(mtlsConfig, log.child({ part: 'mtls' }));
  let platform: VSwitchPlatform =
    (isolation as Isolation) === 'shared' ? new SharedPlatform({ log }) : new ProcessPlatform(log);
  if ((isolation as Isolation) === 'process' && warm > 0)
    platform = new WarmPool(platform, {
      size: warm,
      namePrefix: `${prefix}_`,
      mtu,
      log: log.child({ part: 'warm' }),
    });
  const daemon = new VSwitchDaemon({ platform, log, ifnamePrefix: prefix, mtu });
  // Devices of an earlier daemon with this (validated) prefix that died with it (a crash, SIGKILL) left
  // their UAPI socket files; the prefix is this daemon's alone, and live sockets are kept.
  const stale = await removeStaleSockets(prefix);
  if (stale.length > 0) log.info({ removed: stale }, 'removed UAPI sockets of devices that died earlier');
  const tls = mtls?.serverTls();
  let api: JsonApiServer;
  try {
    api = await JsonApiServer.listen({
      socketPath: apiSocket,
      tls,
      routes: vswitchRoutes(daemon, Date.now()),
      log,
      maxBodyBytes: VSWITCH_MAX_BODY_BYTES,
    });
  } catch (err) {
    mtls?.stop();
    await daemon.close();
    throw err;
  } finally {
    if (tls !== undefined) wipeTlsKey(tls.options);
  }
  mtls?.attach(api);
  log.info(
    { api: apiSocket, prefix, isolation, mtls: mtls?.identity.spiffeId.uri ?? false },
    'vSwitch daemon serving',
  );
  const why = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info({ why }, 'vSwitch daemon stopping');
  mtls?.stop();
  await api.close();
  await daemon.close();
  return 0;
}
