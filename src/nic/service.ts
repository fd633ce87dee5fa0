// The NIC agent as a running service: the agent (keys, engine, tables), its data plane on two
// UDP sockets, metrics, and the management API on a Unix socket. `tenguard nic` is this plus
// argument parsing and signals; unit tests run it on fake sockets.
//
// With `mtls` the NIC enrols with the CA at start (spiffe://<td>/nic/<host>), serves its API
// over mTLS with that certificate (renewed at half life without interrupting the API), admits
// only the allowed client SPIFFE IDs, binds its Ed25519 identity key to the certificate, and
// accepts tenant peers only with a verified binding (cert-binding.ts).
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Identity } from '../identity/identity.js';
import { wipeTlsKey } from '../identity/mtls.js';
import { ServiceMtls, type ServiceMtlsConfig } from '../identity/service-mtls.js';
import { NativeAead } from '../native/aead.js';
import { NativeTunDevice } from '../native/tun.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import { NativeUdpSocket } from '../native/udp.js';
import { parseIp } from '../net/ip.js';
import type { TransportAead } from '../protocol/aead.js';
import { TgError } from '../util/errors.js';
import { JsonApiServer } from '../util/http-json.js';
import { type Logger, logger } from '../util/log.js';
import { NicAgent } from './agent.js';
import { NIC_MAX_BODY_BYTES, nicRoutes } from './api.js';
import { NicDataPlane } from './dataplane.js';
import { Egress } from './egress.js';
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
  /** Egress (README "Egress"): without it every outside address is no route. */
  egress?: EgressOptions;
}

export interface EgressOptions {
  /** The uplink TUN device (made by the operator, the address routed to it). */
  uplinkTun: string;
  /** The IPv4 address allowed flows are source-NATed to (routed to the TUN, not assigned). */
  uplinkAddress: string;
  /** The upstream DNS server the tenant DNS servers forward allowed names to. */
  upstreamDns: string;
  upstreamDnsPort?: number;
  /** Tests: a fake TUN device. */
  openTun?: (name: string) => TunDevice;
}

/** Checks egress options; the parsed uplink address. */
function checkEgress(e: EgressOptions): Uint8Array {
  const a = parseIp(e.uplinkAddress);
  if (a === null || a.length !== 4)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `uplink address '${e.uplinkAddress}' is not an IPv4 address`,
    );
  if (isIP(e.upstreamDns) === 0)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `upstream DNS '${e.upstreamDns}' is not an IP address`);
  return a;
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
    private readonly upstream: Socket | null,
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
    let uplinkTun: TunDevice | null = null;
    let upstream: Socket | null = null;
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
      let send: ((msg: Buffer) => void) | undefined;
      const e = opts.egress;
      if (e !== undefined) {
        const uplinkAddress = checkEgress(e);
        uplinkTun = (e.openTun ?? ((name) => NativeTunDevice.open(name)))(e.uplinkTun);
        agent.forwarder.setEgress(new Egress({ uplinkAddress }));
        const sock = createSocket(isIP(e.upstreamDns) === 6 ? 'udp6' : 'udp4');
        upstream = sock;
        const port = e.upstreamDnsPort ?? 53;
        sock.on('error', (err) => log.warn({ err: err.message }, 'upstream DNS socket error'));
        await new Promise<void>((resolve) => sock.bind(0, resolve));
        send = (msg) => sock.send(msg, port, e.upstreamDns, () => undefined);
        log.info({ tun: uplinkTun.name, address: e.uplinkAddress, upstreamDns: e.upstreamDns }, 'NIC egress');
      }
      const dataPlane = new NicDataPlane({
        uplinkTun: uplinkTun ?? undefined,
        upstream: send,
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
      if (upstream !== null && e !== undefined) {
        const port = e.upstreamDnsPort ?? 53;
        // Only the upstream server's answers are taken; anything else on the socket is ignored.
        upstream.on('message', (msg, rinfo) => {
          if (rinfo.address === e.upstreamDns && rinfo.port === port) dataPlane.upstreamAnswer(msg);
        });
      }
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
      return new NicService(agent, dataPlane, metrics, api, log, mtls, upstream);
    } catch (err) {
      mtls?.stop();
      host?.close();
      fabric?.close();
      uplinkTun?.close();
      upstream?.close();
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
    this.upstream?.close();
    this.agent.close();
    await this.api.close();
  }
}
