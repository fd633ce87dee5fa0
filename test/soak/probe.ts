// Preloaded into the processes a soak watches (NODE_OPTIONS=--import=<this file>, only when
// TG_SOAK_PROBE_DIR is set): on SIGUSR2 the process collects garbage, then writes one JSON
// line to $TG_SOAK_PROBE_DIR/<pid>.json: RSS and heap after the collection, open file
// descriptors, and its active handles and requests by type (process.getActiveResourcesInfo(),
// which lists each timer). Nothing else in the process changes.
import { readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const dir = process.env.TG_SOAK_PROBE_DIR;
if (dir !== undefined && dir.length > 0) {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  process.on('SIGUSR2', () => {
    gc();
    gc();
    const resources: Record<string, number> = {};
    for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1;
    const m = process.memoryUsage();
    let fds = -1;
    try {
      fds = readdirSync('/proc/self/fd').length;
    } catch {
      // not Linux
    }
    const out = join(dir, `${process.pid}.json`);
    writeFileSync(
      `${out}.tmp`,
      JSON.stringify({
        pid: process.pid,
        at: Date.now(),
        rss: m.rss,
        heapUsed: m.heapUsed,
        external: m.external,
        arrayBuffers: m.arrayBuffers,
        fds,
        resources,
      }),
    );
    renameSync(`${out}.tmp`, out);
  });
}
