// Measures the CA through a real token: signatures per second (C_Sign, queued and
// asynchronous as the CA uses it, and synchronous for comparison) and X.509-SVIDs issued
// per second (request check, certificate build, token signature, record append), and
// enrolments per second through the CSR API over TLS on a Unix socket (a fresh TLS handshake,
// a join token and a PKCS#10 request each, answered with the issued chain). Runs on a
// throwaway embedded SoftHSM2 token in a temporary state directory, removed afterwards.
//
// What it showed (2-core lab machine, shared): 4,500 to 11,000 signatures/s queued and
// asynchronous (12,000 to 15,000 synchronous), but only 150 to 220 certificates/s. A token
// signature costs 0.1 to 0.2 ms of the 4 to 6 ms per certificate; the rest is ASN.1 work in
// @peculiar/x509 and asn1js (X509CertificateGenerator.create alone 2.3 ms, a CSR signature
// check 1.1 ms). Building the TBSCertificate directly with @peculiar/asn1-x509 measured
// 1.7 ms for the serialisation alone, so the WebCrypto adapter (token-crypto.ts) was kept:
// the token is not the bottleneck, and asynchronous C_Sign keeps the event loop free for a
// network HSM's round trips. Enrolments through the CSR API over TLS (a fresh handshake, a
// join token and a PKCS#10 request each, sequential) measured 70 to 80/s on the same machine
// under load: the handshake and the request's parsing, not the token, set that rate.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../ca/authority.js';
import { parseCaConfig, SOFTHSM2_MODULE } from '../ca/config.js';
import { CsrServer } from '../ca/csr-server.js';
import type { TokenKeyStore } from '../ca/key-store.js';
import { verifyCsr } from '../ca/svid.js';
import { CaClient } from '../identity/enrolment.js';
import { createKeyAndCsr } from '../identity/identity.js';
import { logger } from '../util/log.js';

export interface CaBenchOptions {
  /** Operations per measurement (upper bound). */
  readonly count: number;
  /** Time bound per measurement, seconds. */
  readonly seconds: number;
  readonly module?: string;
}

export interface CaBenchResult {
  readonly module: string;
  readonly signaturesPerSecondAsync: number;
  readonly signaturesPerSecondSync: number;
  readonly certificatesPerSecond: number;
  readonly verifyAndIssuePerSecond: number;
  readonly enrolmentsPerSecondOverTls: number;
  readonly counts: {
    readonly signatures: number;
    readonly certificates: number;
    readonly enrolments: number;
  };
}

async function rate(count: number, seconds: number, op: (i: number) => Promise<unknown> | unknown) {
  const deadline = performance.now() + seconds * 1000;
  const t0 = performance.now();
  let n = 0;
  while (n < count && performance.now() < deadline) await op(n++);
  return { n, perSecond: n / ((performance.now() - t0) / 1000) };
}

export async function runCaBench(opts: CaBenchOptions): Promise<CaBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'tgca-bench-'));
  const pin = randomBytes(12).toString('base64url');
  const config = parseCaConfig({
    stateDir: dir,
    trustDomain: 'bench.test',
    token: { module: opts.module ?? SOFTHSM2_MODULE, label: 'tg-bench', pin: { env: 'TG_CA_BENCH_UNUSED' } },
  });
  const ca = CertificateAuthority.open(config, { token: { pin: () => pin } });
  try {
    await ca.init();
    const token = ca.keyStore() as TokenKeyStore;
    const key = token.tokenKey(config.token.keyLabel);
    const digest = createHash('sha256').update('tenguard').digest();
    await key.signDigest(digest); // warm up
    const asyncRate = await rate(opts.count, opts.seconds, () => key.signDigest(digest));
    const syncRate = await rate(opts.count, opts.seconds, () => key.signDigestSync(digest));

    const pool = await Promise.all(
      Array.from({ length: 32 }, (_, i) => createKeyAndCsr(`spiffe://bench.test/nic/h${i}`)),
    );
    const verified = await Promise.all(pool.map((p) => verifyCsr(p.csrPem)));
    const certCount = Math.max(1, Math.floor(opts.count / 4));
    const issueRate = await rate(certCount, opts.seconds, (i) =>
      ca.issue({ csr: verified[i % 32], spiffeId: `spiffe://bench.test/nic/h${i % 32}`, requester: 'admin' }),
    );
    const fullRate = await rate(certCount, opts.seconds, async (i) =>
      ca.issue({
        csr: await verifyCsr(pool[i % 32].csrPem),
        spiffeId: `spiffe://bench.test/nic/h${i % 32}`,
        requester: 'admin',
      }),
    );
    const server = await CsrServer.start({ ca, socketPath: join(dir, 'csr.sock'), log: logger('ca.bench') });
    let apiRate: { n: number; perSecond: number };
    try {
      const client = new CaClient({ socketPath: server.socketPath, bundle: ca.trustBundle() });
      apiRate = await rate(Math.max(1, Math.floor(opts.count / 8)), opts.seconds, (i) => {
        const id = `spiffe://bench.test/nic/h${i % 32}`;
        return client.sign(pool[i % 32].csrPem, { joinToken: server.joinTokens.issue(id) });
      });
    } finally {
      await server.close();
    }
    return {
      module: config.token.module,
      signaturesPerSecondAsync: asyncRate.perSecond,
      signaturesPerSecondSync: syncRate.perSecond,
      certificatesPerSecond: issueRate.perSecond,
      verifyAndIssuePerSecond: fullRate.perSecond,
      enrolmentsPerSecondOverTls: apiRate.perSecond,
      counts: {
        signatures: asyncRate.n + syncRate.n,
        certificates: issueRate.n + fullRate.n,
        enrolments: apiRate.n,
      },
    };
  } finally {
    ca.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
