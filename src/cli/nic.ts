// `tenguard nic`: the NIC agent. In the lab it runs inside a NIC namespace; on a DPU, on the
// DPU's own cores. It creates every key it uses in memory, marks itself non-dumpable, and
// wipes its keys when it stops: a restarted agent starts with no keys.
import { isIP } from 'node:net';
import { tuneRuntimeForDataPlane } from '../device/runtime.js';
import {
  INSECURE_WARNING,
  MTLS_ARG_OPTIONS,
  MTLS_USAGE,
  mtlsConfigFromArgs,
} from '../identity/service-mtls.js';
import { nicId } from '../identity/spiffe.js';
import { setDumpable } from '../native/dumpable.js';
import { startHeapTrim } from '../native/heap-trim.js';
import { validateLinkMtu } from '../nic/mtu.js';
import { DEFAULT_NIC_PORT, NicService } from '../nic/service.js';
import { TgError } from '../util/errors.js';
import { requireRoot, run as runCommand } from '../util/exec.js';
import { logger } from '../util/log.js';
import { apiSocketArg, parseDaemonArgs } from './daemon-args.js';

const USAGE = `usage: tenguard nic --api-socket PATH --host-address ADDR --fabric-address ADDR
                    [--host-port N] [--fabric-port N] [--host-mtu N] [--fabric-mtu N]
                    [--uplink-tun NAME --uplink-address ADDR --upstream-dns ADDR]
                    (--ca-socket PATH --ca-bundle FILE --trust-domain TD --host-name NAME
                     [--allow-client ID]... [--cert-ttl S] [--bundle-refresh S] | --insecure)

Runs the NIC agent: the on-host leg on ADDR of the host link (--host-address), the off-host
leg on ADDR of the fabric (--fabric-address), both UDP port ${DEFAULT_NIC_PORT} unless given, and
the management API (HTTP+JSON) on the Unix socket PATH. Stops on SIGTERM/SIGINT.

--host-mtu and --fabric-mtu (default: the MTU of the interface holding each address) say what
the legs carry: TCP SYNs get their MSS clamped to fit both, and a larger packet from a local
workload that must not be fragmented is answered with ICMP "fragmentation needed" / "packet
too big" (README, "MTUs of the legs").

Egress (all three or none): flows the tenants' egress policies allow leave source-NATed to
--uplink-address through the TUN device --uplink-tun (made beforehand, that address routed to
it), and the tenant DNS servers forward the names the policies allow to --upstream-dns (port
53). Without them every address outside the fabric is dropped.

With mTLS the agent enrols as spiffe://TD/nic/NAME, serves its API over mTLS to the allowed
clients only, publishes its tenant keys bound to its certificate, and accepts a tenant peer
only with a binding to a certificate of the trust domain.

${MTLS_USAGE}`;

function port(text: string | undefined, what: string): number {
  if (text === undefined) return DEFAULT_NIC_PORT;
  const n = Number(text);
  if (!/^[0-9]{1,5}$/.test(text) || n < 1 || n > 65535)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} must be a port number from 1 to 65535`);
  return n;
}

function address(text: string | undefined, what: string): string {
  if (text === undefined) throw new TgError('TG_ERR_USAGE', `${what} is required\n${USAGE}`);
  if (isIP(text) === 0)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} '${text}' is not an IP address`);
  if (text === '0.0.0.0' || text === '::')
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} must be a concrete address, not a wildcard`);
  return text;
}

/** The MTU given, or that of the interface holding `addr` in this namespace. */
async function linkMtu(text: string | undefined, what: string, addr: string): Promise<number> {
  if (text !== undefined) {
    if (!/^[0-9]{1,5}$/.test(text)) throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} must be a number`);
    return validateLinkMtu(Number(text), what);
  }
  const r = await runCommand('ip', ['-j', 'addr', 'show']);
  let links: { mtu?: number; addr_info?: { local?: string }[] }[] = [];
  try {
    links = JSON.parse(r.stdout);
  } catch {
    links = [];
  }
  const link = links.find((l) => (l.addr_info ?? []).some((a) => a.local === addr));
  if (link?.mtu === undefined)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `no interface holds ${addr} here to take its MTU from; give ${what}`,
    );
  return validateLinkMtu(link.mtu, `the MTU of the interface holding ${addr}`);
}

export async function run(args: string[]): Promise<number> {
  const values = parseDaemonArgs(
    args,
    {
      'api-socket': { type: 'string' },
      'host-address': { type: 'string' },
      'host-port': { type: 'string' },
      'fabric-address': { type: 'string' },
      'fabric-port': { type: 'string' },
      'host-mtu': { type: 'string' },
      'fabric-mtu': { type: 'string' },
      'uplink-tun': { type: 'string' },
      'uplink-address': { type: 'string' },
      'upstream-dns': { type: 'string' },
      ...MTLS_ARG_OPTIONS,
    },
    USAGE,
  );
  if (values === null) return 0;
  const apiSocket = apiSocketArg(values, USAGE);
  const hostAddress = address(values['host-address'] as string | undefined, '--host-address');
  const fabricAddress = address(values['fabric-address'] as string | undefined, '--fabric-address');
  const hostPort = port(values['host-port'] as string | undefined, '--host-port');
  const fabricPort = port(values['fabric-port'] as string | undefined, '--fabric-port');
  const mtls = mtlsConfigFromArgs(values, (td, host) => nicId(td, host).uri);
  const egressArgs = [values['uplink-tun'], values['uplink-address'], values['upstream-dns']] as (
    | string
    | undefined
  )[];
  const given = egressArgs.filter((v) => v !== undefined).length;
  if (given !== 0 && given !== 3)
    throw new TgError(
      'TG_ERR_USAGE',
      `give all of --uplink-tun, --uplink-address and --upstream-dns, or none\n${USAGE}`,
    );
  const egress =
    given === 3
      ? {
          uplinkTun: egressArgs[0] as string,
          uplinkAddress: address(egressArgs[1], '--uplink-address'),
          upstreamDns: address(egressArgs[2], '--upstream-dns'),
        }
      : undefined;
  requireRoot('tenguard nic');
  if (mtls === undefined) logger('nic').warn(INSECURE_WARNING);
  tuneRuntimeForDataPlane();
  const linkMtus = {
    hostLink: await linkMtu(values['host-mtu'] as string | undefined, '--host-mtu', hostAddress),
    fabric: await linkMtu(values['fabric-mtu'] as string | undefined, '--fabric-mtu', fabricAddress),
  };
  // Keys live in this process only: no core dumps, no ptrace by same-uid processes.
  setDumpable(false);
  startHeapTrim();
  const service = await NicService.start({
    apiSocket,
    hostAddress,
    hostPort,
    fabricAddress,
    fabricPort,
    processMetrics: true,
    mtls,
    linkMtus,
    egress,
  });
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const why = await stopped;
  await service.close(why);
  return 0;
}
