// The CSR API's placement question, answered by the orchestrator: is workload <t>/<w> placed
// on host <h> now? A workload being created or migrated counts for the host it is going to
// (its NIC needs the identity before the workload runs there); one being deleted counts for
// nobody. An unknown workload is not placed; any other failure to ask is an error, which the
// approval policy turns into a denial (PlacementUnavailable), never into an approval.
import { TgError } from '../util/errors.js';
import type { PlacementLookup } from './approval.js';

/** What the lookup needs of the orchestrator: one workload's record by name. */
export interface WorkloadDirectory {
  showWorkload(name: string): Promise<{
    tenant: string;
    host: string;
    state: string;
    migratingTo: string | null;
  }>;
}

export function orchestratorPlacement(dir: WorkloadDirectory): PlacementLookup {
  return async (q) => {
    let w: Awaited<ReturnType<WorkloadDirectory['showWorkload']>>;
    try {
      w = await dir.showWorkload(q.workload);
    } catch (err) {
      if (err instanceof TgError && err.code === 'TG_ERR_NOT_FOUND') return false;
      throw err;
    }
    if (w.tenant !== q.tenant || w.state === 'deleting') return false;
    return w.host === q.host || (w.state === 'migrating' && w.migratingTo === q.host);
  };
}
