// Runs one fuzz target for a bounded time or number of executions: seeds first (the files in
// test/fuzz/corpus/<target>/ and the target's live seeds), then stacked mutations of corpus
// entries, keeping every input whose outcome signature is new. A thrown error, an input slower
// than the time limit, or a process-level error during a run is a finding: the input is saved
// under the findings directory and the target stops.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type MutationContext, mutateBytes, Rng } from './mutate.js';
import type { FuzzTarget } from './target.js';

export interface RunOptions {
  /** Wall-clock budget for the mutation phase. */
  seconds: number;
  /** Stop after this many executions (seeds included); Infinity for time only. */
  runs: number;
  seed: number;
  corpusDir: string;
  findingsDir: string;
  /** Where new-signature inputs are written (to grow the seed corpus); none by default. */
  corpusOut?: string;
  /** An execution slower than this is a finding. */
  slowMs: number;
  /** Each input is written here before it runs (forensics when the process dies hard). */
  traceInput?: string;
  progress: (line: string) => void;
}

export interface Finding {
  kind: 'crash' | 'slow';
  file: string;
  message: string;
}

export interface RunResult {
  target: string;
  executions: number;
  seconds: number;
  execsPerSecond: number;
  seeds: number;
  corpus: number;
  signatures: number;
  /** The most frequent outcomes, for a reader to see what the run reached. */
  topSignatures: [string, number][];
  finding: Finding | null;
}

const MAX_CORPUS = 4096;

export function loadSeeds(dir: string): Buffer[] {
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return names.filter((n) => !n.startsWith('.')).map((n) => readFileSync(join(dir, n)));
}

let processError: unknown = null;
let listening = false;
/** What the runner is awaiting, for the report when the event loop drains under it. */
let phase = 'idle';
/** The input being run, for the report when the process ends under it. */
let current: { target: string; findingsDir: string; input: Buffer } | null = null;

function listenForProcessErrors(): void {
  if (listening) return;
  listening = true;
  // A promise of the code under test that never settles, with nothing left to wake it, ends
  // the process quietly: say so and fail.
  // Something in the code under test ending the process (process.exit, a handler that
  // exits): keep the input and say from where.
  process.on('exit', (code) => {
    if (phase === 'idle' || current === null) return;
    const dir = join(current.findingsDir, current.target);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `exit-${createHash('sha1').update(current.input).digest('hex').slice(0, 16)}`);
    writeFileSync(file, current.input);
    console.error(
      `fuzz: the process is exiting (code ${code}) during ${phase}; input saved as ${file}\n${new Error('exit').stack}`,
    );
    process.exitCode = 1;
  });
  process.on('beforeExit', () => {
    if (phase === 'idle') return;
    console.error(`fuzz: the event loop drained while awaiting ${phase}: a promise that never settles`);
    process.exit(1);
  });
  // During a run an error that escaped the code under test is that run's finding; anywhere
  // else it is the runner's own failure and ends the process.
  const escaped = (err: unknown): void => {
    if (phase === 'idle') {
      console.error(`fuzz: ${describe(err)}`);
      process.exit(2);
    }
    processError = err;
  };
  process.on('uncaughtException', escaped);
  process.on('unhandledRejection', escaped);
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  return String(err);
}

export async function runTarget(target: FuzzTarget, opts: RunOptions): Promise<RunResult> {
  listenForProcessErrors();
  const rng = new Rng(opts.seed);
  phase = `${target.name}: setup`;
  await target.setup();
  const seeds = [
    ...loadSeeds(join(opts.corpusDir, target.corpusName ?? target.name)),
    ...(target.liveSeeds?.() ?? []),
  ];
  const corpus: Buffer[] = [];
  const counts = new Map<string, number>();
  const dictionary = (target.dictionary ?? []).map((t) => Buffer.from(t, 'latin1'));
  const ctx: MutationContext = {
    rng,
    dictionary,
    other: () => (corpus.length > 0 ? rng.pick(corpus) : Buffer.alloc(0)),
    maxLength: target.maxLength,
  };
  if (opts.corpusOut) mkdirSync(join(opts.corpusOut, target.name), { recursive: true });

  let executions = 0;
  let finding: Finding | null = null;
  const started = performance.now();
  const deadline = started + opts.seconds * 1000;
  let lastReport = started;

  const save = (kind: Finding['kind'], input: Buffer, message: string): Finding => {
    const dir = join(opts.findingsDir, target.name);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${kind}-${createHash('sha1').update(input).digest('hex').slice(0, 16)}`);
    writeFileSync(file, input);
    return { kind, file, message };
  };

  const execute = async (input: Buffer): Promise<boolean> => {
    processError = null;
    const t0 = performance.now();
    let sig: string;
    current = { target: target.name, findingsDir: opts.findingsDir, input };
    if (opts.traceInput !== undefined) writeFileSync(opts.traceInput, input);
    try {
      phase = `${target.name}: run`;
      const r = target.run(input);
      sig = typeof r === 'string' ? r : await r;
    } catch (err) {
      finding = save('crash', input, describe(err));
      return false;
    }
    const ms = performance.now() - t0;
    executions++;
    if (processError !== null) {
      finding = save('crash', input, `process-level error during the run: ${describe(processError)}`);
      return false;
    }
    if (ms > opts.slowMs) {
      finding = save('slow', input, `one execution took ${ms.toFixed(0)} ms (limit ${opts.slowMs} ms)`);
      return false;
    }
    const seen = counts.get(sig);
    counts.set(sig, (seen ?? 0) + 1);
    if (seen === undefined) {
      if (corpus.length < MAX_CORPUS) corpus.push(input);
      else corpus[rng.below(MAX_CORPUS)] = input;
      if (opts.corpusOut) {
        const name = createHash('sha1').update(input).digest('hex').slice(0, 16);
        writeFileSync(join(opts.corpusOut, target.name, name), input);
      }
    }
    if (target.resetEvery !== undefined && executions % target.resetEvery === 0) {
      phase = `${target.name}: reset`;
      await target.reset?.();
    }
    return true;
  };

  try {
    for (const s of seeds) {
      if (!(await execute(s.length > target.maxLength ? s.subarray(0, target.maxLength) : s))) break;
      corpus.push(s);
    }
    if (corpus.length === 0) corpus.push(Buffer.alloc(0));
    let sinceYield = 0;
    while (finding === null && executions < opts.runs) {
      const now = performance.now();
      if (now >= deadline) break;
      if (now - lastReport > 10_000) {
        lastReport = now;
        const s = (now - started) / 1000;
        opts.progress(
          `${target.name}: ${executions} executions, ${Math.round(executions / s)}/s, corpus ${corpus.length}, outcomes ${counts.size}`,
        );
      }
      let input = rng.pick(corpus);
      const stack = 1 + rng.below(rng.chance(20) ? 16 : 4);
      phase = `${target.name}: mutate`;
      for (let i = 0; i < stack; i++) {
        const structured = target.mutate !== undefined && rng.chance(50) ? target.mutate(input, rng) : null;
        input = structured ?? mutateBytes(input, ctx);
        if (input.length > target.maxLength) input = input.subarray(0, target.maxLength);
      }
      if (!(await execute(input))) break;
      // Sync targets: let timers and I/O of the code under test run now and then.
      if (++sinceYield >= 256) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
    }
  } finally {
    phase = `${target.name}: teardown`;
    await target.teardown();
    phase = 'idle';
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    target: target.name,
    executions,
    seconds: Math.round(seconds * 10) / 10,
    execsPerSecond: Math.round(executions / Math.max(seconds, 0.001)),
    seeds: seeds.length,
    corpus: corpus.length,
    signatures: counts.size,
    topSignatures: [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8),
    finding,
  };
}
