// Preloaded into the processes a soak watches (NODE_OPTIONS=--import=<this file>, only when
// TG_SOAK_PROBE_DIR is set): on SIGUSR2 the process writes one JSON line to
// $TG_SOAK_PROBE_DIR/<pid>.json: RSS and heap as they are (no collection forced, so the
// process runs as it would without the probe), open file descriptors, and its active
// handles and requests by type (process.getActiveResourcesInfo(), which lists each timer).
// When $TG_SOAK_PROBE_DIR/<pid>.request exists (JSON {gc?: true, snapshot?: path}) it also
// collects garbage and reports the heap and RSS after that, and writes a heap snapshot.
// Processes that have loaded tenguard's addon also report the C heap in use (mallinfo2):
// memory handed out and not freed, which unlike RSS does not move with what glibc keeps cached.
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { mallocStats } from '../../src/native/heap-trim.js';

const dir = process.env.TG_SOAK_PROBE_DIR;
/** The C heap in use, or undefined where the addon cannot be loaded. */
function mallocInUse(): number | undefined {
  try {
    return mallocStats().inUse;
  } catch {
    return undefined;
  }
}

if (dir !== undefined && dir.length > 0) {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  process.on('SIGUSR2', () => {
    const m = process.memoryUsage();
    const resources: Record<string, number> = {};
    for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
    let fds = -1;
    try {
      fds = readdirSync('/proc/self/fd').length;
    } catch {
      // not Linux
    }
    const out: Record<string, unknown> = {
      pid: process.pid,
      at: Date.now(),
      rss: m.rss,
      heapUsed: m.heapUsed,
      heapTotal: m.heapTotal,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
      fds,
      resources,
      mallocInUse: mallocInUse(),
    };
    const requestFile = join(dir, `${process.pid}.request`);
    if (existsSync(requestFile)) {
      const request = JSON.parse(readFileSync(requestFile, 'utf8')) as { gc?: boolean; snapshot?: string };
      rmSync(requestFile, { force: true });
      if (request.gc || request.snapshot) {
        gc();
        gc();
        const after = process.memoryUsage();
        out.rssAfterGc = after.rss;
        out.heapAfterGc = after.heapUsed;
        out.externalAfterGc = after.external;
        out.mallocInUseAfterGc = mallocInUse();
      }
      if (request.snapshot) writeHeapSnapshot(request.snapshot);
    }
    const file = join(dir, `${process.pid}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(out));
    renameSync(`${file}.tmp`, file);
  });
}
