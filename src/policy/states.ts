// Connection states (TCP as Linux conntrack names them, pseudo-states for UDP, ICMP and other
// protocols) and how long an idle connection stays in each. Timeouts are configuration,
// validated by schema (unknown keys rejected); defaults follow Linux's nf_conntrack ones.
import { z } from 'zod';

export const ST_FREE = 0;
export const ST_SYN_SENT = 1;
export const ST_SYN_RECV = 2;
export const ST_ESTABLISHED = 3;
export const ST_FIN_WAIT = 4;
export const ST_CLOSE_WAIT = 5;
export const ST_LAST_ACK = 6;
export const ST_TIME_WAIT = 7;
export const ST_CLOSED = 8;
export const ST_UDP_NEW = 9;
export const ST_UDP_ESTABLISHED = 10;
export const ST_ICMP_NEW = 11;
export const ST_ICMP_REPLIED = 12;
export const ST_OTHER_NEW = 13;
export const ST_OTHER_ESTABLISHED = 14;
/** Entries of the denied-flow table (one record per denied flow, not per packet). */
export const ST_DENIED = 15;
export const STATE_COUNT = 16;

export const STATE_NAMES: readonly string[] = [
  'FREE',
  'SYN_SENT',
  'SYN_RECV',
  'ESTABLISHED',
  'FIN_WAIT',
  'CLOSE_WAIT',
  'LAST_ACK',
  'TIME_WAIT',
  'CLOSED',
  'UDP_NEW',
  'UDP_ESTABLISHED',
  'ICMP_NEW',
  'ICMP_REPLIED',
  'OTHER_NEW',
  'OTHER_ESTABLISHED',
  'DENIED',
];

const seconds = z
  .number()
  .positive()
  .max(30 * 86400);

/** Idle timeouts in seconds. */
export const timeoutsSchema = z.strictObject({
  tcpSynSent: seconds.default(120),
  tcpSynRecv: seconds.default(60),
  tcpEstablished: seconds.default(432_000),
  tcpFinWait: seconds.default(120),
  tcpCloseWait: seconds.default(60),
  tcpLastAck: seconds.default(30),
  tcpTimeWait: seconds.default(120),
  tcpClose: seconds.default(10),
  udpNew: seconds.default(30),
  udpEstablished: seconds.default(120),
  icmp: seconds.default(30),
  otherNew: seconds.default(30),
  otherEstablished: seconds.default(600),
  /** How long a denied flow is remembered (aggregating its packets into one record). */
  denied: seconds.default(30),
});

export type Timeouts = z.infer<typeof timeoutsSchema>;

/** Timeout in milliseconds per state code. */
export function timeoutTable(t: Timeouts): Float64Array {
  const ms = new Float64Array(STATE_COUNT);
  ms[ST_SYN_SENT] = t.tcpSynSent;
  ms[ST_SYN_RECV] = t.tcpSynRecv;
  ms[ST_ESTABLISHED] = t.tcpEstablished;
  ms[ST_FIN_WAIT] = t.tcpFinWait;
  ms[ST_CLOSE_WAIT] = t.tcpCloseWait;
  ms[ST_LAST_ACK] = t.tcpLastAck;
  ms[ST_TIME_WAIT] = t.tcpTimeWait;
  ms[ST_CLOSED] = t.tcpClose;
  ms[ST_UDP_NEW] = t.udpNew;
  ms[ST_UDP_ESTABLISHED] = t.udpEstablished;
  ms[ST_ICMP_NEW] = t.icmp;
  ms[ST_ICMP_REPLIED] = t.icmp;
  ms[ST_OTHER_NEW] = t.otherNew;
  ms[ST_OTHER_ESTABLISHED] = t.otherEstablished;
  ms[ST_DENIED] = t.denied;
  for (let i = 0; i < STATE_COUNT; i++) ms[i] *= 1000;
  return ms;
}

/** True for states in which the connection has seen traffic both ways (kept before others on eviction). */
export function isAssured(state: number): boolean {
  return (
    state === ST_ESTABLISHED ||
    state === ST_UDP_ESTABLISHED ||
    state === ST_ICMP_REPLIED ||
    state === ST_OTHER_ESTABLISHED ||
    (state >= ST_FIN_WAIT && state <= ST_LAST_ACK)
  );
}
