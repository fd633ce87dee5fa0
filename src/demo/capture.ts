// Packet captures for the demo: tcpdump on an interface inside a namespace, written to a
// file, then searched for a plaintext marker and decoded by tshark as WireGuard. A capture
// proves "no plaintext" only next to a positive control: the same search over a capture
// taken inside the workload (where the marker is plaintext) must find it.
import { readFileSync, rmSync, statSync } from 'node:fs';
import { endChild, runOk, startTcpdumpIn } from '../util/exec.js';

/** The UDP port of both NIC legs. */
export const WG_PORT = 51820;

export interface Capture {
  where: string;
  file: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

/** Starts tcpdump on `iface` in namespace `ns`, writing every packet to `file`; resolves once it listens. */
export async function startCapture(where: string, ns: string, iface: string, file: string): Promise<Capture> {
  rmSync(file, { force: true });
  // --immediate-mode: each packet is handed over as it comes, so a short capture stopped
  // right after its traffic still holds it (buffered blocks are lost on SIGINT).
  const child = await startTcpdumpIn(
    ns,
    ['-i', iface, '-n', '-U', '--immediate-mode', '-s', '0', '-w', file],
    `${ns}/${iface}`,
  );
  let stopped = false;
  return {
    where,
    file,
    pid: child.pid,
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      await endChild(child, 'SIGINT');
    },
  };
}

export interface CaptureAnalysis {
  where: string;
  bytes: number;
  frames: number;
  /** The marker appears anywhere in the file (headers, payloads). */
  markerFound: boolean;
  udpPackets: number;
  /** UDP packets tshark decoded as WireGuard messages. */
  wgPackets: number;
  /** WireGuard message types seen (1 initiation, 2 response, 3 cookie, 4 transport) with counts. */
  types: Record<string, number>;
  /** Frames that are neither UDP nor ARP / ND / ICMP. */
  otherFrames: number;
}

/** Searches a stopped capture for `marker` and decodes it (one tshark pass), UDP port WG_PORT as WireGuard. */
export async function analyseCapture(where: string, file: string, marker: Buffer): Promise<CaptureAnalysis> {
  const bytes = statSync(file).size;
  const markerFound = readFileSync(file).includes(marker);
  const out = await runOk(
    'tshark',
    ['-r', file, '-d', `udp.port==${WG_PORT},wg`, '-T', 'fields', '-e', 'frame.protocols', '-e', 'wg.type'],
    { timeoutMs: 60_000 },
  );
  const a: CaptureAnalysis = {
    where,
    bytes,
    frames: 0,
    markerFound,
    udpPackets: 0,
    wgPackets: 0,
    types: {},
    otherFrames: 0,
  };
  for (const line of out.split('\n')) {
    if (line === '') continue;
    a.frames++;
    const [protocols = '', type = ''] = line.split('\t');
    const layers = protocols.split(':');
    const icmp = layers.includes('icmp') || layers.includes('icmpv6');
    if (layers.includes('udp') && !icmp) {
      a.udpPackets++;
      const t = type.split(',')[0];
      if (t !== undefined && t !== '' && layers.includes('wg')) {
        a.wgPackets++;
        a.types[t] = (a.types[t] ?? 0) + 1;
      }
    } else if (!icmp && !layers.includes('arp')) {
      a.otherFrames++;
    }
  }
  return a;
}
