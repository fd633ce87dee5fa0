// Where a round trip over one hop goes (`bench latency --phases`): a packet capture in the
// pinging namespace, on its tunnel interface and its link at once (tcpdump -i any), splits
// every counted ping into
//   outbound: the echo request on the tunnel interface -> its encrypted datagram on the link
//             (the local device: wake-up, TUN read, encryption, send);
//   remote:   that datagram leaving -> the answer arriving on the link (the link both ways and
//             the peer device: wake-up, decryption, the kernel's echo reply, encryption);
//   inbound:  the answer arriving -> the echo reply on the tunnel interface (the local device:
//             receive, decryption, TUN write).
// The kernel stamps each packet as it passes the interface (nanoseconds), so the phases add up
// to the round trip between the request leaving the stack and the reply entering it.
//
// The capture is buffered (no --immediate-mode): tcpdump then wakes about once a second rather
// than once per packet, which would add a process to every round trip it measures. The cost
// that stays is the kernel's copy of each packet into the capture ring (a microsecond or two,
// the same for every implementation), so absolute round trips with --phases are slightly
// longer than without; compare phases across implementations of one run, not across runs.
// tcpdump's flush once a second is still a task that a busy-polling device yields its CPU to
// (device/busy-poll.ts), and the answer that arrives meanwhile waits for it: the 99th
// percentiles of a run with --phases are not the device's, take them from a run without.
import type { ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { TgError } from '../util/errors.js';
import { endChild, startTcpdumpIn } from '../util/exec.js';
import { readPcap } from '../util/pcap.js';

/** Per counted ping, in µs: the three phases (see the top of the file). */
export interface PhaseSamples {
  outbound: number[];
  remote: number[];
  inbound: number[];
}

/** Medians of the phases in µs, and how many pings were matched in the capture. */
export interface PhaseMedians {
  outbound: number;
  remote: number;
  inbound: number;
  matched: number;
}

/** What a captured packet is to the phase split. */
export type CaptureKind = 'request' | 'reply' | 'out' | 'in';

export interface CaptureEvent {
  /** Capture time, µs (from the file's nanosecond or microsecond stamps). */
  t: number;
  kind: CaptureKind;
  /** ICMP echo identifier and sequence number (requests and replies). */
  id: number;
  seq: number;
}

const LINKTYPE_LINUX_SLL = 113;
const LINKTYPE_LINUX_SLL2 = 276;
const ETH_P_IP = 0x0800;
const PACKET_OUTGOING = 4;
/** The smallest UDP payload that carries a tunnelled packet: 16-byte header, 16-byte tag and data. */
const MIN_DATA_PAYLOAD = 33;
/** A phase longer than this is not one round trip's (a lost packet, a handshake between). */
const MAX_PHASE_US = 100_000;

/**
 * The ICMP echo requests and replies and the tunnel datagrams (UDP carrying data, both ways) of
 * a tcpdump capture on `any` (Linux cooked headers v1 or v2), in file order. Other packets,
 * IPv6 and truncated records are skipped; a file that is not a pcap capture of that link type
 * is refused with the reason.
 */
export function captureEvents(file: Buffer): CaptureEvent[] {
  const { linktype, records } = readPcap(file);
  if (linktype !== LINKTYPE_LINUX_SLL && linktype !== LINKTYPE_LINUX_SLL2)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `capture: link type ${linktype} is not a Linux cooked capture`,
    );
  const events: CaptureEvent[] = [];
  for (const { tUs: t, data } of records) {
    const end = data.length;
    let protocol: number;
    let pkttype: number;
    let ip: number;
    if (linktype === LINKTYPE_LINUX_SLL) {
      if (end < 16) continue;
      pkttype = data.readUInt16BE(0);
      protocol = data.readUInt16BE(14);
      ip = 16;
    } else {
      if (end < 20) continue;
      protocol = data.readUInt16BE(0);
      pkttype = data[10];
      ip = 20;
    }
    if (protocol !== ETH_P_IP || ip + 20 > end || data[ip] >> 4 !== 4) continue;
    const l4 = ip + (data[ip] & 0x0f) * 4;
    const proto = data[ip + 9];
    const outgoing = pkttype === PACKET_OUTGOING;
    if (proto === 1 && l4 + 8 <= end) {
      const type = data[l4];
      const id = data.readUInt16BE(l4 + 4);
      const seq = data.readUInt16BE(l4 + 6);
      // The request leaves the stack into the tunnel; the reply comes out of it.
      if (type === 8 && outgoing) events.push({ t, kind: 'request', id, seq });
      else if (type === 0 && !outgoing) events.push({ t, kind: 'reply', id, seq });
    } else if (proto === 17 && l4 + 8 <= end) {
      const payload = data.readUInt16BE(l4 + 4) - 8;
      if (payload >= MIN_DATA_PAYLOAD) events.push({ t, kind: outgoing ? 'out' : 'in', id: 0, seq: 0 });
    }
  }
  return events;
}

/**
 * Splits the round trips of a capture into phases: for each echo request after the first
 * `lead` of its burst (sequence number above `lead`), the first tunnel datagram out after it,
 * the first one in after that, and its own reply after that. A ping whose steps are not all
 * there in that order (lost, or another request between) is left out.
 */
export function roundTripPhases(events: readonly CaptureEvent[], lead = 0): PhaseSamples {
  const out: PhaseSamples = { outbound: [], remote: [], inbound: [] };
  for (let i = 0; i < events.length; i++) {
    const req = events[i];
    if (req.kind !== 'request' || req.seq <= lead) continue;
    let tOut = Number.NaN;
    let tIn = Number.NaN;
    let tReply = Number.NaN;
    for (let j = i + 1; j < events.length; j++) {
      const e = events[j];
      if (e.kind === 'request') break;
      if (Number.isNaN(tOut)) {
        if (e.kind === 'out') tOut = e.t;
      } else if (Number.isNaN(tIn)) {
        if (e.kind === 'in') tIn = e.t;
      } else if (e.kind === 'reply' && e.id === req.id && e.seq === req.seq) {
        tReply = e.t;
        break;
      }
    }
    if (Number.isNaN(tReply)) continue;
    const phases = [tOut - req.t, tIn - tOut, tReply - tIn];
    if (phases.some((p) => p < 0 || p > MAX_PHASE_US)) continue;
    out.outbound.push(phases[0]);
    out.remote.push(phases[1]);
    out.inbound.push(phases[2]);
  }
  return out;
}

function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** The phases' medians (µs, one decimal). */
export function phaseMedians(p: PhaseSamples): PhaseMedians {
  const r1 = (x: number): number => Math.round(x * 10) / 10;
  return {
    outbound: r1(median(p.outbound)),
    remote: r1(median(p.remote)),
    inbound: r1(median(p.inbound)),
    matched: p.outbound.length,
  };
}

/** A running capture in a namespace (tcpdump -i any), to be read once stopped. */
export class PhaseCapture {
  private constructor(
    private readonly child: ChildProcess,
    readonly file: string,
  ) {}

  /** Starts tcpdump on every interface of `ns`, writing `file` (ICMP and UDP, headers only). */
  static async start(ns: string, file: string): Promise<PhaseCapture> {
    rmSync(file, { force: true });
    const child = await startTcpdumpIn(
      ns,
      ['-i', 'any', '-n', '-s', '128', '--time-stamp-precision=nano', '-w', file, 'icmp or udp'],
      `${ns}/any`,
    );
    return new PhaseCapture(child, file);
  }

  /**
   * Stops the capture and returns its events; the file is removed. The capture is buffered, so
   * it first waits out tcpdump's buffer timeout (one second) for the last packets to reach it.
   */
  async stop(): Promise<CaptureEvent[]> {
    if (this.child.exitCode === null && this.child.signalCode === null)
      await new Promise((r) => setTimeout(r, 1500));
    await endChild(this.child, 'SIGINT');
    try {
      return captureEvents(readFileSync(this.file));
    } finally {
      rmSync(this.file, { force: true });
    }
  }

  /** Ends the capture without reading it (on failure); never throws. */
  async abort(): Promise<void> {
    await endChild(this.child, 'SIGKILL');
    rmSync(this.file, { force: true });
  }
}
