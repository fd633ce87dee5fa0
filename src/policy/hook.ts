// The adapter between the NIC's forwarding path and the engine: a function of the shape the
// forwarder calls per packet, (tenant, source workload, destination workload, packet view)
// -> allowed. The types are stated here structurally (the forwarder's WorkloadRef and
// PacketView have these fields), so this module does not depend on the NIC's.
//
// Direction from where the workloads are: source local and destination remote is this NIC
// sending (egress side only; the receiving NIC decides the ingress side), the reverse is
// this NIC receiving (ingress side), both local is a hairpin (both sides here).
import type { Direction, PolicyEngine } from './engine.js';

export interface HookWorkload {
  readonly tenant: string;
  readonly workload: string;
  /** On this NIC's host. */
  readonly local: boolean;
}

export interface HookPacket {
  buf: Buffer;
  offset: number;
  length: number;
}

export type PolicyHookFn = (
  tenant: string,
  src: HookWorkload,
  dst: HookWorkload,
  packet: HookPacket,
) => boolean;

export function directionOf(srcLocal: boolean, dstLocal: boolean): Direction {
  if (srcLocal && !dstLocal) return 'egress';
  if (!srcLocal && dstLocal) return 'ingress';
  return 'both';
}

/**
 * A policy hook over `engine`. `clock` gives `now` (ms, Date.now() scale); a data path that
 * reads the clock once per batch can pass a function returning that value.
 */
export function createPolicyHook(engine: PolicyEngine, clock: () => number = Date.now): PolicyHookFn {
  return (tenant, src, dst, p) =>
    engine.check(tenant, src, dst, p.buf, p.offset, p.length, clock(), directionOf(src.local, dst.local))
      .allowed;
}
