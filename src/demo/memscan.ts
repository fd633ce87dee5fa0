// A scan of another process's memory for secrets: every readable mapping of /proc/PID/maps
// read through /proc/PID/mem (root, or the process's parent under Yama scope 1) and searched
// for each needle. The demo uses it to show that the orchestrator holds no workload PSK while
// the vSwitch side has them. A PSK is looked for in the forms it could take there: the 32 raw
// bytes, its base64 text and its hex text (V8 keeps ASCII strings one byte per character).
// Mappings that cannot be read ([vvar], guard pages) are skipped and counted.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { TgError } from '../util/errors.js';

export interface Needle {
  /** A name for the report (never the secret). */
  label: string;
  bytes: Buffer;
}

export interface ScanResult {
  /** Occurrences per needle label (labels with none are absent). */
  found: Record<string, number>;
  bytesScanned: number;
  regions: number;
  unreadableRegions: number;
}

const CHUNK = 8 * 1024 * 1024;

/** The forms of a 32-byte key worth looking for: raw, base64, hex. */
export function keyNeedles(label: string, key: Uint8Array): Needle[] {
  const b = Buffer.from(key);
  return [
    { label: `${label} (raw)`, bytes: Buffer.from(b) },
    { label: `${label} (base64)`, bytes: Buffer.from(b.toString('base64'), 'latin1') },
    { label: `${label} (hex)`, bytes: Buffer.from(b.toString('hex'), 'latin1') },
  ];
}

interface Region {
  start: bigint;
  end: bigint;
}

function readableRegions(pid: number): Region[] {
  let maps: string;
  try {
    maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch (err) {
    throw new TgError('TG_ERR_NOT_FOUND', `cannot read the memory map of pid ${pid}`, { cause: err });
  }
  const out: Region[] = [];
  for (const line of maps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (r)\S* \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m === null) continue;
    if (m[4] === '[vvar]' || m[4] === '[vsyscall]' || m[4] === '[vvar_vclock]') continue;
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`) });
  }
  return out;
}

/**
 * Searches every readable mapping of `pid` for each needle. The buffers read are wiped after
 * the search (they may hold the very secrets looked for).
 */
export function scanProcessMemory(pid: number, needles: readonly Needle[]): ScanResult {
  if (!Number.isInteger(pid) || pid <= 0) throw new TgError('TG_ERR_INVALID_ARGUMENT', `bad pid ${pid}`);
  const maxNeedle = needles.reduce((m, n) => Math.max(m, n.bytes.length), 1);
  const found: Record<string, number> = {};
  const result: ScanResult = { found, bytesScanned: 0, regions: 0, unreadableRegions: 0 };
  const regions = readableRegions(pid);
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/mem`, 'r');
  } catch (err) {
    throw new TgError('TG_ERR_FORBIDDEN', `cannot open the memory of pid ${pid}`, { cause: err });
  }
  const buf = Buffer.alloc(CHUNK + maxNeedle);
  try {
    for (const r of regions) {
      result.regions++;
      let pos = r.start;
      let carry = 0;
      let ok = true;
      while (pos < r.end) {
        const want = Number(r.end - pos < BigInt(CHUNK) ? r.end - pos : BigInt(CHUNK));
        let n: number;
        try {
          n = readSync(fd, buf, carry, want, pos);
        } catch {
          ok = false;
          break;
        }
        if (n <= 0) break;
        const view = buf.subarray(0, carry + n);
        for (const needle of needles) {
          let i = view.indexOf(needle.bytes);
          while (i !== -1) {
            // A match wholly inside the carried-over tail was counted in the previous chunk.
            if (i + needle.bytes.length > carry) found[needle.label] = (found[needle.label] ?? 0) + 1;
            i = view.indexOf(needle.bytes, i + 1);
          }
        }
        result.bytesScanned += n;
        pos += BigInt(n);
        const keep = Math.min(maxNeedle - 1, view.length);
        view.copy(buf, 0, view.length - keep);
        carry = keep;
      }
      if (!ok) result.unreadableRegions++;
    }
  } finally {
    buf.fill(0);
    closeSync(fd);
  }
  return result;
}
