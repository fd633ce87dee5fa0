// In-memory fakes of the vSwitch daemon's platform (devices and namespace plumbing) for unit
// tests without root: what each device was told over its UAPI is kept for inspection.
import type { UapiChangeSet } from '../../src/uapi/protocol.js';
import type { DeviceExit, DeviceHandle, Plumbing, VSwitchPlatform } from '../../src/vswitch/platform.js';

export interface Seen {
  privateKey?: string;
  peers: {
    publicKey: string;
    psk: string | null;
    endpoint?: string;
    keepalive?: number;
    allowed: string[];
  }[];
  replacePeers: boolean;
}

export class FakeDevice implements DeviceHandle {
  readonly exited: Promise<DeviceExit>;
  readonly changes: Seen[] = [];
  /** The key buffers handed to uapiSet, kept to check they were wiped afterwards. */
  readonly handed: Buffer[] = [];
  private end!: (e: DeviceExit) => void;
  alive = true;

  constructor(
    readonly ifname: string,
    readonly pid: number,
  ) {
    this.exited = new Promise((r) => {
      this.end = r;
    });
  }

  async uapiSet(change: UapiChangeSet): Promise<void> {
    if (!this.alive) throw new Error('ECONNREFUSED');
    if (change.privateKey) this.handed.push(change.privateKey);
    for (const p of change.peers) if (p.presharedKey) this.handed.push(p.presharedKey);
    this.changes.push({
      privateKey: change.privateKey?.toString('base64'),
      replacePeers: change.replacePeers,
      peers: change.peers.map((p) => ({
        publicKey: p.publicKey.toString('base64'),
        psk: p.presharedKey ? p.presharedKey.toString('base64') : null,
        endpoint: p.endpoint?.text,
        keepalive: p.persistentKeepalive,
        allowed: p.allowedIps.map((a) => a.cidr.text),
      })),
    });
  }

  crash(): void {
    this.alive = false;
    this.end({ code: null, signal: 'SIGKILL' });
  }

  async stop(): Promise<void> {
    if (this.alive) {
      this.alive = false;
      this.end({ code: 0, signal: null });
    }
  }
}

export class FakePlatform implements VSwitchPlatform {
  readonly devices = new Map<string, FakeDevice>();
  readonly plumbed = new Map<string, Plumbing>();
  readonly namespaces = new Set(['tgx-w1', 'tgx-w2', 'tgx-w3']);
  private pid = 1000;

  async launch(ifname: string): Promise<DeviceHandle> {
    const d = new FakeDevice(ifname, this.pid++);
    this.devices.set(ifname, d);
    return d;
  }

  netnsExists(netns: string): boolean {
    return this.namespaces.has(netns);
  }

  async linkExists(netns: string, name: string): Promise<boolean> {
    const p = this.plumbed.get(netns);
    return p !== undefined && (p.netnsIfname ?? 'tg0') === name;
  }

  async plumb(p: Plumbing): Promise<void> {
    this.plumbed.set(p.netns, p);
  }

  async unplumb(netns: string): Promise<void> {
    this.plumbed.delete(netns);
  }
}
