// Running commands on lab nodes. A node is named as in the plan: `fabric`, `hN` (host),
// `hN-nic` (NIC) or a workload `hN-tT-wW`; its namespace is `<prefix>-<node>`.
import { type ChildProcess, execFile, type SpawnOptions, spawn } from 'node:child_process';
import { TgError } from '../util/errors.js';
import type { RunResult } from '../util/exec.js';
import { namespaceExists } from '../util/netns.js';
import { planNodes } from './plan.js';
import { type LabState, planOf } from './state.js';

/** All node names of a lab, in plan order. */
export function labNodes(lab: LabState): string[] {
  return [...planNodes(planOf(lab)).keys()];
}

/** The namespace of `node`; TG_ERR_INVALID_ARGUMENT for a name the lab does not have. */
export function nodeNs(lab: LabState, node: string): string {
  const ns = planNodes(planOf(lab)).get(node);
  if (ns === undefined) {
    const known = labNodes(lab);
    const shown = known.slice(0, 12).join(', ') + (known.length > 12 ? ', ...' : '');
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `lab '${lab.prefix}' has no node '${node}' (nodes: ${shown})`,
    );
  }
  return ns;
}

/** Like nodeNs, and also checks that the namespace exists (TG_ERR_NOT_FOUND otherwise). */
export function liveNodeNs(lab: LabState, node: string): string {
  const ns = nodeNs(lab, node);
  if (!namespaceExists(ns))
    throw new TgError('TG_ERR_NOT_FOUND', `namespace '${ns}' of node '${node}' is gone`);
  return ns;
}

export interface NodeRunOptions {
  timeoutMs?: number;
  input?: string;
  /** Aborting kills the command (SIGTERM). */
  signal?: AbortSignal;
}

/** Runs a command to completion in a node's namespace. Never throws for a non-zero exit. */
export function runInNode(
  lab: LabState,
  node: string,
  cmd: string,
  args: readonly string[],
  opts: NodeRunOptions = {},
): Promise<RunResult> {
  return runInNs(nodeNs(lab, node), cmd, args, opts);
}

/** runInNode by namespace name (a workload namespace the orchestrator made, say). */
export function runInNs(
  ns: string,
  cmd: string,
  args: readonly string[],
  opts: NodeRunOptions = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      'ip',
      ['netns', 'exec', ns, cmd, ...args],
      {
        timeout: opts.timeoutMs ?? 60_000,
        maxBuffer: 64 * 1024 * 1024,
        encoding: 'utf8',
        signal: opts.signal,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({
          stdout,
          stderr: stderr || (err && typeof err.code !== 'number' ? String(err.message) : ''),
          code,
        });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** runInNode, throwing TG_ERR_COMMAND_FAILED with the command's stderr on a non-zero exit. */
export async function runInNodeOk(
  lab: LabState,
  node: string,
  cmd: string,
  args: readonly string[],
  opts: NodeRunOptions = {},
): Promise<string> {
  const r = await runInNode(lab, node, cmd, args, opts);
  if (r.code !== 0) {
    throw new TgError(
      'TG_ERR_COMMAND_FAILED',
      `on ${node}: ${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`,
    );
  }
  return r.stdout;
}

/**
 * Starts a long-running command in a node's namespace. `ip netns exec` execs the command
 * in place, so the child's pid is the command's own; the caller owns it and must end it.
 */
export function spawnInNode(
  lab: LabState,
  node: string,
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): ChildProcess {
  return spawn('ip', ['netns', 'exec', nodeNs(lab, node), cmd, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...opts,
  });
}
