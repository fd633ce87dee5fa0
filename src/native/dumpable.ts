// PR_SET_DUMPABLE: a process that holds session keys is made non-dumpable, so no core
// file is written and same-uid processes cannot ptrace it or read /proc/<pid>/mem.
import { loadNative } from './binding.js';

export function setDumpable(on: boolean): void {
  loadNative().setDumpable(on);
}

/** True unless PR_GET_DUMPABLE reports 0 (2, "root only", also counts as dumpable). */
export function isDumpable(): boolean {
  return loadNative().getDumpable() !== 0;
}
