// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
// Load Balancer", NSDI 2016, section 3.4): a lookup table of MAGLEV_TABLE_SIZE slots, each
// naming one endpoint, filled by letting every endpoint claim slots in turn along its own
// permutation (offset and skip from two hashes of its name). Every endpoint gets nearly the
// same number of slots, and when an endpoint comes or goes only about 1/N of the slots change
// owner, so few new connections land elsewhere than before. Permutations depend on endpoint
// names only, so every NIC builds the same table for the same endpoint set.
//
// Pure functions and one immutable table per endpoint set; no I/O.

/** Table size: a prime well above 100 x the endpoints a service is expected to have (paper: M >= 100 N). */
export const MAGLEV_TABLE_SIZE = 16_381;

/** 32-bit FNV-1a of a string's UTF-16 code units, with a seed folded in first. */
export function hashName(name: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return mix32(h);
}

/** A 32-bit finaliser (murmur3 fmix32): spreads low-entropy inputs over all bits. */
export function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Builds the lookup table for endpoints named `names` (distinct): slot -> index into `names`.
 * An empty list gives an empty table (no endpoint: nothing to pick).
 */
export function buildMaglevTable(names: readonly string[], size = MAGLEV_TABLE_SIZE): Int32Array {
  const table = new Int32Array(names.length === 0 ? 0 : size).fill(-1);
  const n = names.length;
  if (n === 0) return table;
  const offset = new Uint32Array(n);
  const skip = new Uint32Array(n);
  const next = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    offset[i] = hashName(names[i], 0x9e3779b9) % size;
    skip[i] = (hashName(names[i], 0x7f4a7c15) % (size - 1)) + 1;
  }
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      let c = (offset[i] + next[i] * skip[i]) % size;
      while (table[c] >= 0) {
        next[i]++;
        c = (offset[i] + next[i] * skip[i]) % size;
      }
      table[c] = i;
      next[i]++;
      if (++filled === size) return table;
    }
  }
}
