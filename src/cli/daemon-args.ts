// Argument handling shared by the long-running commands (`nic`, `vswitchd`, `orchestrator`):
// strict options with the usage text on any mistake, --help, and the API socket path.
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { TgError } from '../util/errors.js';

export type DaemonValues = Record<string, string | boolean | string[] | undefined>;

/** The parsed options, or null after --help printed the usage. */
export function parseDaemonArgs(
  args: string[],
  options: NonNullable<ParseArgsConfig['options']>,
  usage: string,
): DaemonValues | null {
  let values: DaemonValues;
  try {
    ({ values } = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${usage}`);
  }
  if (values.help) {
    process.stdout.write(usage);
    return null;
  }
  return values;
}

/** --api-socket: required, an absolute path. */
export function apiSocketArg(values: DaemonValues, usage: string): string {
  const apiSocket = values['api-socket'] as string | undefined;
  if (apiSocket === undefined) throw new TgError('TG_ERR_USAGE', `--api-socket is required\n${usage}`);
  if (!apiSocket.startsWith('/'))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--api-socket must be an absolute path, not '${apiSocket}'`);
  return apiSocket;
}
