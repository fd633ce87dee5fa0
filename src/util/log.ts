// Structured logs (pino) with one child logger per component. Key material is never
// passed to a logger: use fingerprint() from util/keys for anything key-shaped.
import { type Logger, pino } from 'pino';

const root: Logger = pino(
  {
    name: 'tenguard',
    level: process.env.TENGUARD_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
  },
  pino.destination(2),
); // stderr: stdout belongs to command output (--json)

export function logger(component: string): Logger {
  return root.child({ component });
}

export type { Logger };
