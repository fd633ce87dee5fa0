// One vSwitch instance: the tunnel device of one workload. It owns a device (a process or an
// engine inside the daemon; its own key pair, its own TUN as tg0 in the workload's namespace,
// its own session with the NIC) and nothing of any other instance. States:
//
//   created     device up and plumbed, key set, no NIC peer yet
//   configured  the NIC is its only peer (allowed IPs 0.0.0.0/0 and ::/0): traffic flows
//   crashed     the device ended without being asked to (reported with its exit; restartable)
//   stopped     ended on request
//
// The private key is made here, handed to the device (over its UAPI socket, or straight to its
// engine in shared isolation, which keeps its own copy) and wiped; the instance keeps only
// the public key. The PSK passes through on its way to the device and is wiped likewise.

import { secretPool } from '../native/secret-pool.js';
import { parseCidr, parseEndpoint } from '../net/ip.js';
import type { HostAddress } from '../nic/addresses.js';
import { openPsk, type PskBox } from '../nic/psk-box.js';
import { generatePrivateKey, isZero, keyFingerprint, publicKeyOf } from '../protocol/crypto.js';
import type { UapiAllowedIpChange } from '../uapi/protocol.js';
import { TgError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { DeviceExit, DeviceHandle, VSwitchPlatform } from './platform.js';

/** Keeps the NIC's view of the vSwitch's endpoint fresh and opens the session at configure time. */
export const VSWITCH_KEEPALIVE_S = 25;

export type InstanceState = 'created' | 'configured' | 'crashed' | 'stopped';

export interface InstanceSpec {
  workload: string;
  netns: string;
  address: HostAddress;
  /** The IPv6 address of a dual-stack workload; null for one address only. */
  address6: HostAddress | null;
  routes: string[];
  ifname: string;
  /** The interface's name inside the namespace (tg0 unless a CNI runtime asked for another). */
  netnsIfname: string;
  mtu: number;
}

export interface NicCrypto {
  nicPublicKey: Buffer;
  /** The PSK sealed by the NIC to this instance's public key. */
  sealedPsk: PskBox;
  nicEndpoint: string;
}

export interface InstanceInfo {
  workload: string;
  netns: string;
  address: string;
  address6?: string;
  ifname: string;
  netnsIfname: string;
  publicKey: string;
  state: InstanceState;
  pid: number | null;
  nicPublicKey: string | null;
  nicEndpoint: string | null;
  startedAt: string;
  exit: DeviceExit | null;
}

function allowAll(): UapiAllowedIpChange[] {
  return ['0.0.0.0/0', '::/0'].map((t) => ({ cidr: parseCidr(t)!, remove: false }));
}

export class VSwitchInstance {
  state: InstanceState = 'created';
  exit: DeviceExit | null = null;
  private nicPublicKey: Buffer | null = null;
  private nicEndpoint: string | null = null;
  private stopping = false;

  private constructor(
    readonly spec: InstanceSpec,
    private readonly device: DeviceHandle,
    readonly publicKey: Buffer,
    /** The instance's private key, kept only to open PSK boxes; wiped when the instance ends. */
    private readonly boxKey: Buffer,
    readonly startedAt: string,
    private readonly log: Logger,
    onCrash: (i: VSwitchInstance) => void,
  ) {
    void device.exited.then((exit) => {
      this.wipeBoxKey();
      this.exit = exit;
      if (this.stopping) {
        this.state = 'stopped';
        return;
      }
      this.state = 'crashed';
      this.log.warn({ workload: spec.workload, ifname: spec.ifname, ...exit }, 'vSwitch instance crashed');
      onCrash(this);
    });
  }

  /** Starts the device, gives it a fresh key pair, and plumbs its TUN into the workload's namespace. */
  static async start(
    platform: VSwitchPlatform,
    spec: InstanceSpec,
    log: Logger,
    onCrash: (i: VSwitchInstance) => void,
  ): Promise<VSwitchInstance> {
    const device = await platform.launch(spec.ifname, spec.mtu);
    const generated = generatePrivateKey();
    // Kept in locked memory for the instance's life, to open PSK boxes.
    const privateKey = secretPool().copyOf(generated);
    generated.fill(0);
    try {
      const publicKey = publicKeyOf(privateKey);
      // The device gets its own copy (wiped here once handed over); this one stays for boxes.
      const handed = Buffer.from(privateKey);
      try {
        await device.uapiSet({ privateKey: handed, replacePeers: true, peers: [] });
      } finally {
        handed.fill(0);
      }
      await platform.plumb({
        ifname: device.linkName ?? spec.ifname,
        netns: spec.netns,
        netnsIfname: spec.netnsIfname,
        addressCidr: `${spec.address.text}/${spec.address.family === 4 ? 32 : 128}`,
        family: spec.address.family,
        ...(spec.address6 !== null ? { address6Cidr: `${spec.address6.text}/128` } : {}),
        routes: spec.routes,
        mtu: spec.mtu,
      });
      const inst = new VSwitchInstance(
        spec,
        device,
        publicKey,
        privateKey,
        new Date().toISOString(),
        log,
        onCrash,
      );
      log.info(
        {
          workload: spec.workload,
          netns: spec.netns,
          ifname: spec.ifname,
          pid: device.pid,
          key: keyFingerprint(publicKey),
        },
        'vSwitch instance created',
      );
      return inst;
    } catch (err) {
      secretPool().free(privateKey);
      await device.stop();
      await platform.unplumb(spec.netns, spec.netnsIfname).catch(() => undefined);
      throw err;
    }
  }

  private boxKeyWiped = false;

  /** Wipes the instance's private key and returns its slot, once. */
  private wipeBoxKey(): void {
    if (this.boxKeyWiped) return;
    this.boxKeyWiped = true;
    secretPool().free(this.boxKey);
  }

  /** Opens a PSK box sealed to this instance for this NIC key (the caller frees the result). */
  private openBox(box: PskBox, nicPublicKey: Uint8Array): Buffer {
    if (this.boxKeyWiped) throw new TgError('TG_ERR_CONFLICT', `instance '${this.spec.workload}' has ended`);
    const psk = secretPool().alloc(32);
    try {
      openPsk(box, { workload: this.spec.workload, instancePrivateKey: this.boxKey, nicPublicKey }, psk);
    } catch (err) {
      secretPool().free(psk);
      throw err;
    }
    return psk;
  }

  /** Makes the NIC the device's only peer, with the PSK opened from its box (wiped after use). */
  async configure(crypto: NicCrypto): Promise<void> {
    let psk: Buffer | undefined;
    try {
      this.requireRunning();
      const endpoint = parseEndpoint(crypto.nicEndpoint);
      if (endpoint === null)
        throw new TgError(
          'TG_ERR_INVALID_ARGUMENT',
          `nicEndpoint '${crypto.nicEndpoint.slice(0, 64)}' is not address:port`,
        );
      if (crypto.nicPublicKey.length !== 32 || isZero(crypto.nicPublicKey))
        throw new TgError('TG_ERR_INVALID_ARGUMENT', 'nicPublicKey must be a non-zero 32-byte key');
      psk = this.openBox(crypto.sealedPsk, crypto.nicPublicKey);
      await this.device.uapiSet({
        replacePeers: true,
        peers: [
          {
            publicKey: Buffer.from(crypto.nicPublicKey),
            remove: false,
            updateOnly: false,
            presharedKey: psk,
            endpoint,
            persistentKeepalive: VSWITCH_KEEPALIVE_S,
            replaceAllowedIps: true,
            allowedIps: allowAll(),
          },
        ],
      });
      this.nicPublicKey = Buffer.from(crypto.nicPublicKey);
      this.nicEndpoint = endpoint.text;
      this.state = 'configured';
      this.log.info(
        { workload: this.spec.workload, nic: keyFingerprint(crypto.nicPublicKey), endpoint: endpoint.text },
        'vSwitch instance configured',
      );
    } finally {
      if (psk !== undefined) secretPool().free(psk);
    }
  }

  /** Sets a new PSK, opened from its box, on the NIC peer (the current session carries on). */
  async rotatePsk(sealedPsk: PskBox): Promise<void> {
    let psk: Buffer | undefined;
    try {
      this.requireRunning();
      if (this.state !== 'configured' || this.nicPublicKey === null)
        throw new TgError('TG_ERR_CONFLICT', `instance '${this.spec.workload}' has no NIC peer yet`);
      psk = this.openBox(sealedPsk, this.nicPublicKey);
      await this.device.uapiSet({
        replacePeers: false,
        peers: [
          {
            publicKey: Buffer.from(this.nicPublicKey),
            remove: false,
            updateOnly: true,
            presharedKey: psk,
            replaceAllowedIps: false,
            allowedIps: [],
          },
        ],
      });
      this.log.info({ workload: this.spec.workload }, 'vSwitch instance PSK rotated');
    } finally {
      if (psk !== undefined) secretPool().free(psk);
    }
  }

  /** Ends the device process (its keys die with it) and removes tg0 from the namespace. */
  async stop(platform: VSwitchPlatform): Promise<void> {
    this.stopping = true;
    this.wipeBoxKey();
    await this.device.stop();
    if (this.state !== 'crashed') this.state = 'stopped';
    await platform.unplumb(this.spec.netns, this.spec.netnsIfname);
  }

  get running(): boolean {
    return this.state === 'created' || this.state === 'configured';
  }

  info(): InstanceInfo {
    return {
      workload: this.spec.workload,
      netns: this.spec.netns,
      address: this.spec.address.text,
      ...(this.spec.address6 !== null ? { address6: this.spec.address6.text } : {}),
      ifname: this.spec.ifname,
      netnsIfname: this.spec.netnsIfname,
      publicKey: this.publicKey.toString('base64'),
      state: this.state,
      pid: this.running ? (this.device.pid ?? null) : null,
      nicPublicKey: this.nicPublicKey?.toString('base64') ?? null,
      nicEndpoint: this.nicEndpoint,
      startedAt: this.startedAt,
      exit: this.exit,
    };
  }

  private requireRunning(): void {
    if (!this.running)
      throw new TgError(
        'TG_ERR_CONFLICT',
        `instance '${this.spec.workload}' is ${this.state}; restart it first`,
      );
  }
}
