// Which store an orchestrator runs on, from `--store`: `sqlite:DIR` (the embedded default:
// orchestrator.db in DIR) or `etcd:URL[,URL...]` (client URLs of the members, http:// or
// https://), with TLS files for etcd (the CA of the members' certificates, and this client's
// certificate and key when the members demand client certificates).
import { readFileSync } from 'node:fs';
import { TgError } from '../util/errors.js';
import { DEFAULT_ETCD_PREFIX, EtcdStore } from './etcd-store.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store } from './store.js';

export type StoreSpec = { kind: 'sqlite'; dir: string } | { kind: 'etcd'; endpoints: string[] };

export interface EtcdTlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

export function parseStoreSpec(text: string): StoreSpec {
  const i = text.indexOf(':');
  const kind = i < 0 ? '' : text.slice(0, i);
  const rest = i < 0 ? '' : text.slice(i + 1);
  if (kind === 'sqlite') {
    if (!rest.startsWith('/'))
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `--store sqlite:PATH needs an absolute directory, not '${rest}'`,
      );
    return { kind: 'sqlite', dir: rest };
  }
  if (kind === 'etcd') {
    const endpoints = rest.split(',').filter((u) => u.length > 0);
    if (endpoints.length === 0 || endpoints.length > 16)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        '--store etcd: needs 1 to 16 client URLs, comma-separated',
      );
    for (const u of endpoints) {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `--store etcd: '${u}' is not a URL`);
      }
      if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.port === '' || url.pathname !== '/')
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `--store etcd: '${u}' is not http(s)://HOST:PORT`);
    }
    return { kind: 'etcd', endpoints };
  }
  throw new TgError(
    'TG_ERR_INVALID_ARGUMENT',
    `--store must be sqlite:PATH or etcd:URL[,URL...], not '${text}'`,
  );
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TgError('TG_ERR_CONFIG', `cannot read the etcd ${what} ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Opens the store a spec names (etcd: connects and reads once). */
export async function openStore(
  spec: StoreSpec,
  opts: { tls?: EtcdTlsFiles; prefix?: string; timeoutMs?: number } = {},
): Promise<Store> {
  if (spec.kind === 'sqlite') {
    if (opts.tls?.ca !== undefined || opts.tls?.cert !== undefined || opts.tls?.key !== undefined)
      throw new TgError('TG_ERR_USAGE', 'the etcd TLS options go with --store etcd:...');
    return SqliteStore.open(spec.dir);
  }
  const tls = opts.tls ?? {};
  const https = spec.endpoints.some((u) => u.startsWith('https:'));
  if ((tls.cert === undefined) !== (tls.key === undefined))
    throw new TgError('TG_ERR_USAGE', '--etcd-cert and --etcd-key go together');
  if (https && tls.ca === undefined) throw new TgError('TG_ERR_USAGE', 'https etcd URLs need --etcd-ca');
  if (!https && tls.ca !== undefined) throw new TgError('TG_ERR_USAGE', '--etcd-ca needs https:// etcd URLs');
  if (
    spec.endpoints.some((u) => u.startsWith('https:')) !== spec.endpoints.every((u) => u.startsWith('https:'))
  )
    throw new TgError('TG_ERR_USAGE', 'etcd URLs must be all http:// or all https://');
  return EtcdStore.open({
    endpoints: spec.endpoints,
    tls:
      tls.ca === undefined
        ? undefined
        : {
            ca: readPem(tls.ca, 'CA bundle'),
            cert: tls.cert === undefined ? undefined : readPem(tls.cert, 'client certificate'),
            key: tls.key === undefined ? undefined : readPem(tls.key, 'client key'),
          },
    prefix: opts.prefix ?? DEFAULT_ETCD_PREFIX,
    timeoutMs: opts.timeoutMs,
  });
}
