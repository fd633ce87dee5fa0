// `tenguard nic`: the NIC agent. In the lab it runs inside a NIC namespace; on a DPU, on the
// DPU's own cores. It creates every key it uses in memory, marks itself non-dumpable, and
// wipes its keys when it stops: a restarted agent starts with no keys.
import { isIP } from 'node:net';
import {
  INSECURE_WARNING,
  MTLS_ARG_OPTIONS,
  MTLS_USAGE,
  mtlsConfigFromArgs,
} from '../identity/service-mtls.js';
import { nicId } from '../identity/spiffe.js';
import { setDumpable } from '../native/dumpable.js';
import { DEFAULT_NIC_PORT, NicService } from '../nic/service.js';
import { TgError } from '../util/errors.js';
import { requireRoot } from '../util/exec.js';
import { logger } from '../util/log.js';
import { apiSocketArg, parseDaemonArgs } from './daemon-args.js';

const USAGE = `usage: tenguard nic --api-socket PATH --host-address ADDR --fabric-address ADDR
                    [--host-port N] [--fabric-port N]
                    (--ca-socket PATH --ca-bundle FILE --trust-domain TD --host-name NAME
                     [--allow-client ID]... [--cert-ttl S] [--bundle-refresh S] | --insecure)

Runs the NIC agent: the on-host leg on ADDR of the host link (--host-address), the off-host
leg on ADDR of the fabric (--fabric-address), both UDP port ${DEFAULT_NIC_PORT} unless given, and
the management API (HTTP+JSON) on the Unix socket PATH. Stops on SIGTERM/SIGINT.

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

export async function run(args: string[]): Promise<number> {
  const values = parseDaemonArgs(
    args,
    {
      'api-socket': { type: 'string' },
      'host-address': { type: 'string' },
      'host-port': { type: 'string' },
      'fabric-address': { type: 'string' },
      'fabric-port': { type: 'string' },
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
  requireRoot('tenguard nic');
  if (mtls === undefined) logger('nic').warn(INSECURE_WARNING);
  // Keys live in this process only: no core dumps, no ptrace by same-uid processes.
  setDumpable(false);
  const service = await NicService.start({
    apiSocket,
    hostAddress,
    hostPort,
    fabricAddress,
    fabricPort,
    processMetrics: true,
    mtls,
  });
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const why = await stopped;
  await service.close(why);
  return 0;
}
