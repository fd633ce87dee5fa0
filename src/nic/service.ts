// The NIC agent as a running service: the agent (keys, engine, tables), its data plane on two
// UDP sockets, metrics, and the management API on a Unix socket. `tenguard nic` is this plus
// argument parsing and signals; unit tests run it on fake sockets.
//
// With `mtls` the NIC enrols with the CA at start (spiffe://<td>/nic/<host>), serves its API
// over mTLS with that certificate (renewed at half life without interrupting the API), admits
// only the allowed client SPIFFE IDs, binds its Ed25519 identity key to the certificate, and
// accepts tenant peers only with a verified binding (cert-binding.ts).
import { performance } from 'node:perf_hooks';
import type { Identity } from '../identity/identity.js';
import { wipeTlsKey } from '../identity/mtls.js';
import { ServiceMtls, type ServiceMtlsConfig } from '../identity/service-mtls.js';
import { NativeAead } from '../native/aead.js';
import type { PacketSocket } from '../native/types.js';
import { NativeUdpSocket } from '../native/udp.js';
import type { TransportAead } from '../protocol/aead.js';
import { JsonApiServer } from '../util/http-json.js';
import { type Logger, logger } from '../util/log.js';
import { NicAgent } from './agent.js';
import { NIC_MAX_BODY_BYTES, nicRoutes } from './api.js';
import { NicDataPlane } from './dataplane.js';
import type { PolicyHook } from './forwarding.js';
import { NicMetrics } from './metrics.js';
import { nicTenantMtu } from './mtu.js';

export const DEFAULT_NIC_PORT = 51820;

export interface NicServiceOptions {
  apiSocket: string;
  /** Address (and port) of the host-link socket: the on-host leg. */
  hostAddress: string;
  hostPort?: number;
  /** Address (and port) of the fabric socket: the off-host leg. */
  fabricAddress: string;
  fabricPort?: number;
  /** Tests: fake sockets and AEAD. */
  openSocket?: (address: string, port: number) => PacketSocket;
  aead?: TransportAead;
  log?: Logger;
  policy?: PolicyHook;
  processMetrics?: boolean;
  /** mTLS on the API and certificate-bound tenant keys; plain HTTP on the socket without. */
  mtls?: ServiceMtlsConfig;
  /**
   * MTUs of the host link and the fabric (mtu.ts): with both, TCP SYNs get their MSS clamped
   * to what the legs carry and larger packets that must not be fragmented an ICMP answer.
   */
  linkMtus?: { hostLink: number; fabric: number };
}

/** Address family of a textual IP address. */
function familyOf(address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4;
}

function endpointText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export class NicService {
  private closed = false;

  private constructor(
    readonly agent: NicAgent,
    readonly dataPlane: NicDataPlane,
    readonly metrics: NicMetrics,
    readonly api: JsonApiServer,
    private readonly log: Logger,
    readonly mtls: ServiceMtls | undefined,
  ) {}

  static async start(opts: NicServiceOptions): Promise<NicService> {
    const log = opts.log ?? logger('nic');
    const open = opts.openSocket ?? ((address, port) => NativeUdpSocket.open({ address, port }));
    const hostPort = opts.hostPort ?? DEFAULT_NIC_PORT;
    const fabricPort = opts.fabricPort ?? DEFAULT_NIC_PORT;
    const now = (): number => performance.now();
    let tenantMtu: number | undefined;
    if (opts.linkMtus !== undefined)
      tenantMtu = nicTenantMtu(
        { mtu: opts.linkMtus.hostLink, outerFamily: familyOf(opts.hostAddress) },
        { mtu: opts.linkMtus.fabric, outerFamily: familyOf(opts.fabricAddress) },
      );
    const agent = new NicAgent({
      hostEndpoint: endpointText(opts.hostAddress, hostPort),
      fabricEndpoint: endpointText(opts.fabricAddress, fabricPort),
      aead: opts.aead ?? new NativeAead(),
      log,
      now,
      policy: opts.policy,
      mtu: tenantMtu,
    });
    if (opts.linkMtus !== undefined && tenantMtu !== undefined) {
      agent.forwarder.setLegLimits({ tenantMtu });
      log.info(
        { hostLinkMtu: opts.linkMtus.hostLink, fabricMtu: opts.linkMtus.fabric, tenantMtu },
        'NIC leg MTUs',
      );
    }
    let host: PacketSocket | null = null;
    let fabric: PacketSocket | null = null;
    let mtls: ServiceMtls | undefined;
    try {
      if (opts.mtls !== undefined) {
        mtls = await ServiceMtls.start(opts.mtls, log.child({ part: 'mtls' }));
        const m = mtls;
        agent.setCertificate(m.identity);
        agent.setPeerTrust({ bundle: m.bundle, isRevoked: m.revocations.isRevoked });
        m.onRenewed((id: Identity) => agent.setCertificate(id));
        m.onBundle((bundle) => agent.setPeerTrust({ bundle, isRevoked: m.revocations.isRevoked }));
      }
      host = open(opts.hostAddress, hostPort);
      fabric = open(opts.fabricAddress, fabricPort);
      const dataPlane = new NicDataPlane({
        engine: agent.engine,
        forwarder: agent.forwarder,
        hostSocket: host,
        fabricSocket: fabric,
        onHostIdentity: agent.onHostIdentityId,
        log,
        now,
      });
      const metrics = new NicMetrics({
        agent,
        io: () => dataPlane.ioCounters(),
        loopErrors: () => dataPlane.loopErrors,
        processMetrics: opts.processMetrics,
      });
      let running = false;
      const tls = mtls?.serverTls();
      let api: JsonApiServer;
      try {
        api = await JsonApiServer.listen({
          socketPath: opts.apiSocket,
          tls,
          routes: nicRoutes(agent, metrics, () => running && dataPlane.running),
          log,
          maxBodyBytes: NIC_MAX_BODY_BYTES,
          onAnswer: (route, method, status) => metrics.countRequest(route, method, status),
        });
      } finally {
        if (tls !== undefined) wipeTlsKey(tls.options);
      }
      mtls?.attach(api);
      dataPlane.start();
      running = true;
      log.info(
        {
          api: opts.apiSocket,
          host: endpointText(opts.hostAddress, hostPort),
          fabric: endpointText(opts.fabricAddress, fabricPort),
          mtls: mtls?.identity.spiffeId.uri ?? false,
        },
        'NIC agent serving',
      );
      return new NicService(agent, dataPlane, metrics, api, log, mtls);
    } catch (err) {
      mtls?.stop();
      host?.close();
      fabric?.close();
      agent.close();
      throw err;
    }
  }

  /** Stops the data plane and the API and wipes every key. */
  async close(why = 'stop'): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.log.info({ why }, 'NIC agent shutting down');
    this.mtls?.stop();
    this.dataPlane.close();
    this.agent.close();
    await this.api.close();
  }
}
