// What a benchmark reports beside throughput: the CPU time the tunnel processes spent per
// gigabyte moved (from /proc/<pid>/stat, utime + stime, all threads of the process), and the
// version of the wireguard-go binary it was compared with.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { TgError } from '../util/errors.js';

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every Linux ABI in use). */
const CLOCK_TICKS_PER_S = 100;
/** utime and stime are fields 14 and 15; counted after the ')' that ends field 2 (comm). */
const UTIME_AFTER_COMM = 11;

/** CPU seconds (user + system, all threads) the process `pid` has used so far. */
export function processCpuSeconds(pid: number): number {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch (err) {
    throw new TgError('TG_ERR_NOT_FOUND', `no process ${pid} to measure`, { cause: err });
  }
  // comm may hold spaces and parentheses: the fields start after its last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[UTIME_AFTER_COMM]);
  const stime = Number(fields[UTIME_AFTER_COMM + 1]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime))
    throw new TgError('TG_ERR_INTERNAL', `cannot read the CPU times of process ${pid}`);
  return (utime + stime) / CLOCK_TICKS_PER_S;
}

/** CPU seconds used by a set of processes between start() and stop(). */
export class CpuMeter {
  private readonly before = new Map<number, number>();

  constructor(private readonly pids: readonly number[]) {
    if (pids.length === 0) throw new TgError('TG_ERR_INTERNAL', 'no processes to measure');
  }

  start(): void {
    for (const pid of this.pids) this.before.set(pid, processCpuSeconds(pid));
  }

  /** Seconds used since start(), summed over the processes. */
  stop(): number {
    let sum = 0;
    for (const pid of this.pids) sum += processCpuSeconds(pid) - (this.before.get(pid) ?? 0);
    return sum;
  }
}

/** CPU seconds per 10^9 bytes moved, to 3 decimals (0 when nothing moved). */
export function cpuSecondsPerGb(cpuSeconds: number, bytes: number): number {
  if (bytes <= 0) return 0;
  return Math.round((cpuSeconds / (bytes / 1e9)) * 1000) / 1000;
}

/** The version a wireguard-go binary reports (`wireguard-go --version`: "wireguard-go v0.0.X"). */
export function wireguardGoVersion(bin: string): string {
  let out: string;
  try {
    out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 5000 });
  } catch (err) {
    throw new TgError('TG_ERR_NOT_FOUND', `cannot run '${bin} --version': ${(err as Error).message}`, {
      cause: err,
    });
  }
  const m = /wireguard-go\s+v?([0-9][0-9A-Za-z.+-]*)/.exec(out);
  if (m === null)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `'${bin}' does not report a wireguard-go version`);
  return m[1];
}
