// The CNI plugin's network configuration parser (src/cni/config.ts parseCniConfig): the bytes a
// container runtime passes on stdin, decoded, version-checked and validated by schema.
// Findings: an exception other than CniError; a CniError with a code the parser does not
// document (only 1, 6 and 7) or without a message; an accepted configuration that does not
// parse back to itself from its own JSON (the plugin hands prevResult and the runtime's keys
// on, so what it accepted must survive a round trip: its JSON, parsed again, is accepted and
// serialises to the same text), or whose version is not supported. The text, not the values:
// JSON.parse makes 1e309 Infinity and keeps -0, which JSON.stringify writes as null and 0.
import { parseCniConfig } from '../../../src/cni/config.js';
import { CNI_ERR, CniError, SUPPORTED_VERSIONS } from '../../../src/cni/spec.js';
import { mutateJson, type Rng } from '../mutate.js';
import { FuzzFinding, type FuzzTarget } from '../target.js';

const DOCUMENTED_CODES: ReadonlySet<number> = new Set([
  CNI_ERR.INCOMPATIBLE_VERSION,
  CNI_ERR.DECODE_FAILURE,
  CNI_ERR.INVALID_NETWORK_CONFIG,
]);

/** The first path element of a refusal's details ("host: ..." -> "host"), for the signature. */
function refusedField(err: CniError): string {
  const m = /^invalid network configuration: ([^:]+):/.exec(err.message);
  if (m === null) return '';
  const first = m[1].split('.')[0];
  // Unknown keys are kept, so only the schema's own keys can be named; anything else is folded.
  return first.length <= 32 ? first : 'long';
}

export class CniConfigTarget implements FuzzTarget {
  readonly name = 'cni';
  readonly description = 'CNI network configuration: UTF-8, JSON, cniVersion, schema, round trip';
  readonly maxLength = 8192;
  readonly dictionary = [
    '"cniVersion":"1.0.0"',
    '"cniVersion":"0.4.0"',
    '"cniVersion":"1.1.0"',
    '"cniVersion":"0.3.1"',
    '"name":"acme-net"',
    '"type":"tenguard"',
    '"tenant":"acme"',
    '"host":"h1"',
    '"orchestrator":"/run/tenguard/orchestrator.sock"',
    '"mtls":{',
    '"cert":"/etc/tenguard/cni.pem"',
    '"key":"/etc/tenguard/cni.key"',
    '"caBundle":"/etc/tenguard/ca.pem"',
    '"timeoutMs":',
    '"prevResult":{',
    '"runtimeConfig":{',
    '"args":{',
    '"cni.dev/valid-attachments":[',
    '"containerID":"abc"',
    '"ifname":"eth0"',
    '"__proto__":',
    '\\u0000',
    '1e309',
    '-0',
  ];

  setup(): void {}

  mutate(input: Buffer, rng: Rng): Buffer | null {
    return mutateJson(input, rng);
  }

  run(input: Buffer): string {
    let cfg: ReturnType<typeof parseCniConfig>;
    try {
      cfg = parseCniConfig(input);
    } catch (err) {
      if (!(err instanceof CniError)) throw err;
      if (!DOCUMENTED_CODES.has(err.code)) throw new FuzzFinding(`undocumented CNI error code ${err.code}`);
      if (typeof err.message !== 'string' || err.message.length === 0)
        throw new FuzzFinding('a CniError without a message');
      return `refused:${err.code}:${refusedField(err)}`;
    }
    if (!(SUPPORTED_VERSIONS as readonly string[]).includes(cfg.cniVersion))
      throw new FuzzFinding(`accepted cniVersion '${String(cfg.cniVersion).slice(0, 32)}'`);
    let text: string;
    let again: string;
    try {
      text = JSON.stringify(cfg);
    } catch (err) {
      throw new FuzzFinding('an accepted configuration cannot be serialised', { cause: err });
    }
    try {
      again = JSON.stringify(parseCniConfig(Buffer.from(text, 'utf8')));
    } catch (err) {
      throw new FuzzFinding('an accepted configuration is refused when its own JSON is parsed again', {
        cause: err,
      });
    }
    if (again !== text) throw new FuzzFinding('an accepted configuration does not parse back to itself');
    const shape =
      (cfg.tenant === undefined ? 't-' : 't+') +
      (cfg.mtls === undefined ? 'm-' : 'm+') +
      (cfg.prevResult === undefined ? 'p-' : 'p+') +
      (cfg['cni.dev/valid-attachments'] === undefined ? 'g-' : 'g+');
    return `accepted:${cfg.cniVersion}:${shape}`;
  }

  teardown(): void {}
}

export function cniTarget(): FuzzTarget {
  return new CniConfigTarget();
}
