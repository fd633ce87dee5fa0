// The lab state file, /run/tenguard/lab/<prefix>.json: the plan plus a record of the build.
// It is written before the first object exists and after every build step, so a crashed
// build leaves a record of what it was doing. It holds names and addresses only, no secrets.
// Creating it with O_EXCL is how a build claims its prefix.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { TgError } from '../util/errors.js';
import { LAB_STATE_DIR, type LabPlan, runDirPath, stateFilePath, validatePrefix } from './plan.js';

export const LAB_STATE_VERSION = 1;

const sizeSchema = z.strictObject({
  hosts: z.number().int().positive(),
  tenants: z.number().int().positive(),
  workloads: z.number().int().nonnegative(),
  nics: z.number().int().min(2).optional(),
});

const pcieSchema = z.strictObject({
  subnetV4: z.string(),
  subnetV6: z.string(),
  hostIf: z.string(),
  nicIf: z.string(),
  hostV4: z.string(),
  nicV4: z.string(),
  hostV6: z.string(),
  nicV6: z.string(),
});

const fabricPortSchema = z.strictObject({
  nicIf: z.string(),
  bridgeIf: z.string(),
  nicV4: z.string(),
  nicV6: z.string(),
});

const hostSchema = z.strictObject({
  name: z.string(),
  index: z.number().int().positive(),
  hostNs: z.string(),
  nicNode: z.string(),
  nicNs: z.string(),
  pcie: pcieSchema,
  fabric: fabricPortSchema,
  nicApiSocket: z.string(),
  extraNics: z
    .array(
      z.strictObject({
        name: z.string(),
        node: z.string(),
        ns: z.string(),
        pcie: pcieSchema,
        fabric: fabricPortSchema,
        apiSocket: z.string(),
      }),
    )
    .optional(),
});

export const labStateSchema = z.strictObject({
  version: z.literal(LAB_STATE_VERSION),
  prefix: z.string(),
  size: sizeSchema,
  mtu: z.number().int().positive(),
  runDir: z.string(),
  fabric: z.strictObject({
    ns: z.string(),
    bridge: z.string(),
    subnetV4: z.string(),
    subnetV6: z.string(),
    bridgeV4: z.string(),
    bridgeV6: z.string(),
  }),
  hosts: z.array(hostSchema),
  tenants: z.array(
    z.strictObject({
      name: z.string(),
      index: z.number().int(),
      overlayV4: z.string(),
      overlayV6: z.string(),
    }),
  ),
  workloads: z.array(
    z.strictObject({
      name: z.string(),
      ns: z.string(),
      host: z.string(),
      tenant: z.string(),
      index: z.number().int(),
      overlayV4: z.string(),
      overlayV6: z.string(),
    }),
  ),
  /** `building` until the last step is done; a `building` lab whose builder is gone crashed. */
  status: z.enum(['building', 'ready']),
  builder: z.strictObject({ pid: z.number().int(), startedAt: z.string() }),
  steps: z.strictObject({ total: z.number().int(), done: z.array(z.string()) }),
  readyAt: z.string().optional(),
  buildMs: z.number().optional(),
});

export type LabState = z.infer<typeof labStateSchema>;

/** The plan part of a state (also checks, at compile time, that the two shapes agree). */
export function planOf(state: LabState): LabPlan {
  const { version: _v, status: _s, builder: _b, steps: _st, readyAt: _r, buildMs: _m, ...plan } = state;
  return plan;
}

export function newLabState(plan: LabPlan, totalSteps: number): LabState {
  return {
    version: LAB_STATE_VERSION,
    ...structuredClone(plan),
    status: 'building',
    builder: { pid: process.pid, startedAt: new Date().toISOString() },
    steps: { total: totalSteps, done: [] },
  };
}

function serialize(state: LabState): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}

/**
 * Writes the state file only if none exists: the build's claim on its prefix.
 * Throws TG_ERR_LAB_EXISTS when another lab (or a crashed one) holds the prefix.
 */
export function claimLabState(state: LabState, dir = LAB_STATE_DIR): void {
  const path = stateFilePath(state.prefix, dir);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  try {
    writeFileSync(path, serialize(state), { flag: 'wx', mode: 0o644 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new TgError(
        'TG_ERR_LAB_EXISTS',
        `lab '${state.prefix}' already exists (state file ${path}); remove it with 'tenguard lab down --prefix ${state.prefix}'`,
      );
    }
    throw new TgError('TG_ERR_INTERNAL', `cannot write ${path}`, { cause: err });
  }
}

/** Replaces the state file atomically (write to a temporary file, then rename). */
export function writeLabState(state: LabState, dir = LAB_STATE_DIR): void {
  const path = stateFilePath(state.prefix, dir);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, serialize(state), { mode: 0o644 });
  renameSync(tmp, path);
}

/** The state of lab `prefix`, or null when it has no state file. */
export function readLabState(prefix: string, dir = LAB_STATE_DIR): LabState | null {
  const path = stateFilePath(prefix, dir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TgError('TG_ERR_INTERNAL', `cannot read ${path}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new TgError('TG_ERR_CONFIG', `lab state file ${path} is not valid JSON`, { cause: err });
  }
  const parsed = labStateSchema.safeParse(json);
  if (!parsed.success) {
    throw new TgError(
      'TG_ERR_CONFIG',
      `lab state file ${path} is malformed: ${z.prettifyError(parsed.error)}`,
      {
        cause: parsed.error,
      },
    );
  }
  if (parsed.data.prefix !== prefix) {
    throw new TgError('TG_ERR_CONFIG', `lab state file ${path} names prefix '${parsed.data.prefix}'`);
  }
  return parsed.data;
}

/** Removes the state file, its temporary file and the lab's run directory. Returns whether a state file existed. */
export function removeLabState(prefix: string, dir = LAB_STATE_DIR): boolean {
  validatePrefix(prefix);
  const path = stateFilePath(prefix, dir);
  let existed = true;
  try {
    rmSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    existed = false;
  }
  rmSync(`${path}.tmp`, { force: true });
  rmSync(runDirPath(prefix, dir), { recursive: true, force: true });
  return existed;
}
