// The contract between a fuzz target and the runner (runner.ts).
//
// A target turns one input into one run of the code under test and returns an outcome
// signature: a short string naming what happened (which drop counter moved, which error code
// came back, which status the server answered). The runner keeps an input in its corpus when
// its signature is new, so inputs that reach new outcomes are mutated further (outcome-guided,
// not coverage-guided: see README.md). Anything the target throws is a finding: a crash, an
// unexpected exception class, a 500, an invariant broken.
import type { Rng } from './mutate.js';

export interface FuzzTarget {
  readonly name: string;
  readonly description: string;
  /** The seed folder under test/fuzz/corpus/ when not the target's name (shared seeds). */
  readonly corpusName?: string;
  /** Inputs longer than this are cut. */
  readonly maxLength: number;
  /** Tokens the byte mutator inserts (field names, keywords, separators). */
  readonly dictionary?: readonly string[];
  /** Builds whatever the target runs against (engines, servers, stores). */
  setup(): Promise<void> | void;
  /** Seeds made at setup time that cannot be files: messages of a live session. */
  liveSeeds?(): Buffer[];
  /** Structure-aware mutation (e.g. of a JSON body); null to fall back to the byte mutators. */
  mutate?(input: Buffer, rng: Rng): Buffer | null;
  /** One execution. Returns the outcome signature; throws for a finding. */
  run(input: Buffer): string | Promise<string>;
  /** Executions between resets (state built up by earlier inputs is dropped). */
  readonly resetEvery?: number;
  reset?(): Promise<void> | void;
  teardown(): Promise<void> | void;
}

/** A finding: what the runner reports and saves for an input. */
export class FuzzFinding extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FuzzFinding';
  }
}
