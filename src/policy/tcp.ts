// The TCP connection state machine, as a table: next state from (state, event, side). Pure,
// no sequence-number tracking (Linux additionally checks windows; a packet that passes here
// has also passed the tunnel's cryptokey routing, so it comes from the workload it claims).
//
// Side: before any FIN (SYN_SENT, SYN_RECV, ESTABLISHED) and after the close (TIME_WAIT,
// CLOSED) it is the packet's direction (0 original, 1 reply). In FIN_WAIT, CLOSE_WAIT and
// LAST_ACK it is relative to the side that sent the first FIN (0 that side, 1 the other),
// which the entry remembers; that is how CLOSE_WAIT (the other side acked the first FIN)
// and LAST_ACK (both sides sent FIN, the last ACK must come from the first closer) are told
// apart without Linux's per-direction tables.
//
// Departures from Linux: no window checks; a SYN/ACK from the original side is invalid; a
// connection in TIME_WAIT or CLOSED reopened by a new SYN from the original side becomes a new
// flow (the old one's record is closed) rather than reusing the entry.

import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from './packet.js';
import {
  ST_CLOSE_WAIT,
  ST_CLOSED,
  ST_ESTABLISHED,
  ST_FIN_WAIT,
  ST_LAST_ACK,
  ST_SYN_RECV,
  ST_SYN_SENT,
  ST_TIME_WAIT,
} from './states.js';

export const EV_SYN = 0;
export const EV_SYNACK = 1;
export const EV_FIN = 2;
export const EV_ACK = 3;
export const EV_RST = 4;
export const EV_NONE = 5;

/** The packet is not valid in this state: dropped and counted, the entry unchanged. */
export const TCP_INVALID = -1;
/** A new SYN on a closed connection: end the old flow and start a new one. */
export const TCP_REOPEN = -2;

const IV = TCP_INVALID;
const RO = TCP_REOPEN;
const SS = ST_SYN_SENT;
const SR = ST_SYN_RECV;
const ES = ST_ESTABLISHED;
const FW = ST_FIN_WAIT;
const CW = ST_CLOSE_WAIT;
const LA = ST_LAST_ACK;
const TW = ST_TIME_WAIT;
const CL = ST_CLOSED;

/** The event a packet's flags make. */
export function tcpEvent(flags: number): number {
  if ((flags & TCP_RST) !== 0) return EV_RST;
  const syn = (flags & TCP_SYN) !== 0;
  const fin = (flags & TCP_FIN) !== 0;
  if (syn && fin) return EV_NONE;
  if (syn) return (flags & TCP_ACK) !== 0 ? EV_SYNACK : EV_SYN;
  if (fin) return EV_FIN;
  if ((flags & TCP_ACK) !== 0) return EV_ACK;
  return EV_NONE;
}

//                       SYN       SYN/ACK   FIN       ACK       RST       none
//                       [s0, s1]  [s0, s1]  [s0, s1]  [s0, s1]  [s0, s1]  [s0, s1]
const TABLE: Record<number, number[][]> = {
  [SS]: [
    [SS, SR],
    [IV, SR],
    [IV, IV],
    [IV, IV],
    [CL, CL],
    [IV, IV],
  ],
  [SR]: [
    [SR, IV],
    [IV, SR],
    [FW, FW],
    [ES, SR],
    [CL, CL],
    [IV, IV],
  ],
  [ES]: [
    [IV, IV],
    [IV, ES],
    [FW, FW],
    [ES, ES],
    [CL, CL],
    [IV, IV],
  ],
  [FW]: [
    [IV, IV],
    [IV, IV],
    [FW, LA],
    [FW, CW],
    [CL, CL],
    [IV, IV],
  ],
  [CW]: [
    [IV, IV],
    [IV, IV],
    [CW, LA],
    [CW, CW],
    [CL, CL],
    [IV, IV],
  ],
  [LA]: [
    [IV, IV],
    [IV, IV],
    [LA, LA],
    [TW, LA],
    [CL, CL],
    [IV, IV],
  ],
  [TW]: [
    [RO, IV],
    [IV, IV],
    [TW, TW],
    [TW, TW],
    [CL, CL],
    [IV, IV],
  ],
  [CL]: [
    [RO, IV],
    [IV, IV],
    [CL, CL],
    [CL, CL],
    [CL, CL],
    [IV, IV],
  ],
};

/** Flattened [state][event][side] for the hot path. */
const FLAT = new Int8Array(16 * 6 * 2).fill(IV);
for (const [state, rows] of Object.entries(TABLE))
  for (let ev = 0; ev < 6; ev++)
    for (let side = 0; side < 2; side++) FLAT[(Number(state) * 6 + ev) * 2 + side] = rows[ev][side];

/** True for the states in which the side is relative to the first closer. */
export function closingState(state: number): boolean {
  return state === FW || state === CW || state === LA;
}

/**
 * Next state for a packet making `event`, sent in direction `reply` (0 original, 1 reply),
 * in `state`, where `closerReply` says whether the first FIN came from the reply side.
 * Returns a state, TCP_INVALID or TCP_REOPEN. A move into FIN_WAIT makes the sender the
 * first closer (the caller records it).
 */
export function tcpNext(state: number, closerReply: number, event: number, reply: number): number {
  const side = closingState(state) ? reply ^ closerReply : reply;
  return FLAT[(state * 6 + event) * 2 + side];
}

/**
 * The first packet of a connection with no entry: a SYN opens it (SYN_SENT); with `loose`
 * (as Linux's nf_conntrack_tcp_loose) an ACK or FIN picks up a connection already under way
 * (ESTABLISHED, or FIN_WAIT with the original side as first closer), as happens after a
 * workload migrated or the NIC restarted. RST, SYN/ACK and flagless packets never open one.
 */
export function tcpFirst(event: number, loose: boolean): number {
  if (event === EV_SYN) return SS;
  if (!loose) return IV;
  return event === EV_ACK ? ES : event === EV_FIN ? FW : IV;
}
