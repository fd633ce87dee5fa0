// Deterministic input mutation for the fuzz targets: a seeded PRNG, byte-level mutators in the
// manner of libFuzzer's (bit flips, interesting values, inserts, deletes, copies, splices,
// dictionary tokens) and a structure-aware mutator for JSON inputs that changes one node of the
// parsed value (type swaps, deep nesting, huge numbers, prototype keys, long strings).

/** xorshift128+: fast, seeded, reproducible across runs and machines. */
export class Rng {
  private s0: bigint;
  private s1: bigint;

  constructor(seed: number) {
    // splitmix64 expands the seed into the two state words.
    let z = BigInt.asUintN(64, BigInt(seed) + 0x9e3779b97f4a7c15n);
    const next = (): bigint => {
      z = BigInt.asUintN(64, z + 0x9e3779b97f4a7c15n);
      let x = z;
      x = BigInt.asUintN(64, (x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n);
      x = BigInt.asUintN(64, (x ^ (x >> 27n)) * 0x94d049bb133111ebn);
      return x ^ (x >> 31n);
    };
    this.s0 = next();
    this.s1 = next();
    this.refill();
  }

  // 64 bits at a time are cut into two 32-bit values; BigInt work once per two draws.
  private spare = 0;
  private hasSpare = false;

  private refill(): number {
    let x = this.s0;
    const y = this.s1;
    this.s0 = y;
    x = BigInt.asUintN(64, x ^ (x << 23n));
    this.s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    const out = BigInt.asUintN(64, this.s1 + y);
    this.spare = Number(out >> 32n);
    this.hasSpare = true;
    return Number(out & 0xffffffffn);
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    return this.refill();
  }

  /** A uniform integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  chance(percent: number): boolean {
    return this.below(100) < percent;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0x3a, 0x3d, 0x0a, 0x2f];
const INTERESTING_16 = [0, 1, 0x7fff, 0x8000, 0xffff, 0x0100, 0x05dc, 0x0514, 0xfff0];
const INTERESTING_32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x10000, 148, 92, 64, 32];

/** What a byte-level mutation may draw on besides the input itself. */
export interface MutationContext {
  rng: Rng;
  /** Tokens to insert or overwrite with (per target). */
  dictionary: readonly Buffer[];
  /** Another corpus entry, for splicing. */
  other: () => Buffer;
  maxLength: number;
}

function clampLength(b: Buffer, max: number): Buffer {
  return b.length > max ? b.subarray(0, max) : b;
}

/** One byte-level mutation; returns a new buffer (the input is never changed). */
export function mutateBytes(input: Buffer, ctx: MutationContext): Buffer {
  const { rng } = ctx;
  const b = Buffer.from(input);
  const len = b.length;
  const pos = (): number => rng.below(len);
  switch (rng.below(13)) {
    case 0: {
      if (len === 0) break;
      const p = pos();
      b[p] ^= 1 << rng.below(8);
      return b;
    }
    case 1: {
      if (len === 0) break;
      b[pos()] = rng.u32() & 0xff;
      return b;
    }
    case 2: {
      if (len === 0) break;
      b[pos()] = rng.pick(INTERESTING_8);
      return b;
    }
    case 3: {
      if (len < 2) break;
      const p = rng.below(len - 1);
      const v = rng.pick(INTERESTING_16);
      if (rng.chance(50)) b.writeUInt16LE(v, p);
      else b.writeUInt16BE(v, p);
      return b;
    }
    case 4: {
      if (len < 4) break;
      const p = rng.below(len - 3);
      const v = rng.pick(INTERESTING_32);
      if (rng.chance(50)) b.writeUInt32LE(v >>> 0, p);
      else b.writeUInt32BE(v >>> 0, p);
      return b;
    }
    case 5: {
      // Insert random bytes.
      const p = rng.below(len + 1);
      const n = 1 + rng.below(rng.chance(10) ? 256 : 8);
      return clampLength(Buffer.concat([b.subarray(0, p), rng.bytes(n), b.subarray(p)]), ctx.maxLength);
    }
    case 6: {
      // Delete a range.
      if (len === 0) break;
      const p = pos();
      const n = 1 + rng.below(Math.min(len - p, 32));
      return Buffer.concat([b.subarray(0, p), b.subarray(p + n)]);
    }
    case 7: {
      // Duplicate a range in place (repeats grow inputs toward the limits).
      if (len === 0) break;
      const p = pos();
      const n = 1 + rng.below(Math.min(len - p, 64));
      const times = rng.chance(10) ? 1 + rng.below(200) : 1;
      const chunk = b.subarray(p, p + n);
      const parts = [b.subarray(0, p + n)];
      for (let i = 0; i < times; i++) parts.push(chunk);
      parts.push(b.subarray(p + n));
      return clampLength(Buffer.concat(parts), ctx.maxLength);
    }
    case 8: {
      // Overwrite with a copy of another range.
      if (len < 2) break;
      const from = pos();
      const to = pos();
      const n = 1 + rng.below(Math.min(len - from, len - to, 32));
      b.copy(b, to, from, from + n);
      return b;
    }
    case 9: {
      // Splice: head of this input, tail of another.
      const o = ctx.other();
      const p = rng.below(len + 1);
      const q = rng.below(o.length + 1);
      return clampLength(Buffer.concat([b.subarray(0, p), o.subarray(q)]), ctx.maxLength);
    }
    case 10:
    case 11: {
      if (ctx.dictionary.length === 0) break;
      const tok = rng.pick(ctx.dictionary);
      const p = rng.below(len + 1);
      if (rng.chance(50) || p + tok.length > len)
        return clampLength(Buffer.concat([b.subarray(0, p), tok, b.subarray(p)]), ctx.maxLength);
      tok.copy(b, p);
      return b;
    }
    case 12: {
      // Truncate.
      if (len === 0) break;
      return b.subarray(0, pos());
    }
  }
  // The chosen mutation did not apply (empty input): append something instead.
  return clampLength(Buffer.concat([b, rng.bytes(1 + rng.below(8))]), ctx.maxLength);
}

const JSON_SPECIALS: readonly unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  2 ** 53 + 1,
  -(2 ** 63),
  1e308,
  '',
  ' ',
  '0',
  '-1',
  'NaN',
  '__proto__',
  'constructor',
  '../../etc/passwd',
  '%00',
  '\u0000',
  '\ud800',
  'a'.repeat(300),
  '100.64.0.0/10',
  '::/0',
  '0.0.0.0/0',
  '100.64.1.1',
  '255.255.255.255',
  'fd00::1',
  '198.18.0.1:51820',
  '[::1]:65536',
  'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
  [],
  {},
];

const KEY_SPECIALS = ['__proto__', 'constructor', 'prototype', 'toString', '', 'x'.repeat(200)];

function randomJson(rng: Rng, depth: number): unknown {
  switch (rng.below(depth > 3 ? 4 : 6)) {
    case 0:
      return rng.pick(JSON_SPECIALS);
    case 1:
      return rng.u32() - 2 ** 31;
    case 2:
      return rng.bytes(rng.below(12)).toString('latin1');
    case 3:
      return rng.chance(50);
    case 4: {
      const a: unknown[] = [];
      for (let i = rng.below(4); i > 0; i--) a.push(randomJson(rng, depth + 1));
      return a;
    }
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.below(4); i > 0; i--) o[rng.pick(KEY_SPECIALS)] = randomJson(rng, depth + 1);
      return o;
    }
  }
}

type Container = Record<string, unknown> | unknown[];

/** Every container in a JSON value, with the keys of its children. */
function containers(v: unknown, out: Container[], limit: number): void {
  if (out.length >= limit || v === null || typeof v !== 'object') return;
  out.push(v as Container);
  for (const child of Object.values(v as object)) containers(child, out, limit);
}

/** Bytes a repeated element may add at most (stacked repeats would otherwise multiply). */
const MAX_REPEAT_BYTES = 64 * 1024;

/**
 * One structural change to a JSON document: replace, delete or add one node, nest deeply,
 * repeat an array's element many times, or swap a string for a near miss. Returns null when
 * the input is not JSON.
 */
export function mutateJson(input: Buffer, rng: Rng): Buffer | null {
  try {
    return mutateJsonValue(input, rng);
  } catch (err) {
    // Nested past the stack (stacked nesting mutations): let the byte mutators have it.
    if (err instanceof RangeError) return null;
    throw err;
  }
}

function mutateJsonValue(input: Buffer, rng: Rng): Buffer | null {
  let value: unknown;
  try {
    value = JSON.parse(input.toString('utf8'));
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || rng.chance(5)) {
    return Buffer.from(JSON.stringify(randomJson(rng, 0)) ?? 'null');
  }
  const all: Container[] = [];
  containers(value, all, 256);
  const c = rng.pick(all);
  const keys = Object.keys(c);
  const key = keys.length > 0 ? rng.pick(keys) : undefined;
  const set = (k: string, v: unknown): void => {
    if (Array.isArray(c)) c[Number(k)] = v;
    else Object.defineProperty(c, k, { value: v, enumerable: true, writable: true, configurable: true });
  };
  switch (rng.below(8)) {
    case 0:
      if (key !== undefined) set(key, randomJson(rng, 2));
      break;
    case 1:
      if (key !== undefined) {
        if (Array.isArray(c)) c.splice(Number(key), 1);
        else delete c[key];
      }
      break;
    case 2:
      if (Array.isArray(c)) c.push(randomJson(rng, 2));
      else set(rng.chance(50) ? rng.pick(KEY_SPECIALS) : `k${rng.below(4)}`, randomJson(rng, 2));
      break;
    case 3: {
      // Deep nesting.
      if (key === undefined) break;
      let v: unknown = c[key as keyof typeof c];
      for (let i = 1 + rng.below(rng.chance(10) ? 3000 : 20); i > 0; i--) v = rng.chance(50) ? [v] : { a: v };
      set(key, v);
      break;
    }
    case 4:
      if (Array.isArray(c) && c.length > 0) {
        const item = c[rng.below(c.length)];
        const itemBytes = (JSON.stringify(item) ?? 'null').length + 1;
        const times = Math.min(
          1 + rng.below(rng.chance(20) ? 5000 : 50),
          Math.floor(MAX_REPEAT_BYTES / itemBytes),
        );
        for (let i = 0; i < times; i++) c.push(item);
      }
      break;
    case 5:
      if (key !== undefined) {
        const v = c[key as keyof typeof c];
        if (typeof v === 'string') {
          const s = Buffer.from(v);
          if (s.length > 0) s[rng.below(s.length)] = rng.pick(INTERESTING_8);
          set(key, s.toString('utf8') + (rng.chance(30) ? rng.pick(['/', ':', '.', '%', '\n', '=']) : ''));
        } else if (typeof v === 'number') {
          set(key, rng.pick([v + 1, v - 1, -v, v * 65536, v / 3, Number.MAX_SAFE_INTEGER, 65535, 65536]));
        } else set(key, randomJson(rng, 2));
      }
      break;
    case 6:
      if (key !== undefined) set(key, rng.pick(JSON_SPECIALS));
      break;
    default:
      if (key !== undefined && keys.length > 1) {
        // Swap two values.
        const other = rng.pick(keys);
        const a = c[key as keyof typeof c];
        set(key, c[other as keyof typeof c]);
        set(other, a);
      }
  }
  return Buffer.from(JSON.stringify(value) ?? 'null');
}
