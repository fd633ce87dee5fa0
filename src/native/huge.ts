// Memory for large tables looked up at random (the policy engine's connection tables): from
// the addon, aligned to 2 MiB and advised for transparent huge pages (native/slab.c), so that a
// lookup in a table of many megabytes costs a cache miss and not also a page walk. Smaller
// tables, and a process without the addon, get an ordinary ArrayBuffer: the same zero-filled
// memory, only with 4 KiB pages.
import { loadNative } from './binding.js';

/** Tables from this size up get huge pages (one huge page). */
export const HUGE_TABLE_MIN = 2 << 20;

let addon: boolean | undefined;

/** `bytes` of zero-filled memory, in huge pages when that is large enough to matter. */
export function allocTable(bytes: number): ArrayBuffer {
  if (bytes >= HUGE_TABLE_MIN && addon !== false) {
    try {
      const ab = loadNative().allocHuge(bytes);
      addon = true;
      return ab;
    } catch (err) {
      // Only a missing addon falls back; a failed mapping is the caller's out-of-memory error.
      if (addon === true || (err as { code?: string }).code !== 'TG_ERR_NATIVE') throw err;
      addon = false;
    }
  }
  return new ArrayBuffer(bytes);
}
