// The demo's report: numbered progress lines, one PASS/FAIL line per claim, measured
// figures, and at the end either a summary (plain mode) or one JSON object on stdout
// (--json; progress then goes to stderr so stdout stays one parseable object).

export interface DemoCheck {
  name: string;
  passed: boolean;
  detail: string;
}

export interface DemoResult {
  /** What drove the NICs and vSwitches (the orchestrator, described). */
  control: string;
  /** Whether per-tenant policies were enforced by the NICs' policy API. */
  policy: string;
  /** How the control APIs and the PSKs were protected in this run. */
  security: DemoSecurity;
  checks: DemoCheck[];
  figures: Record<string, number>;
  /** Pids of every long-running process the demo started (all ended by its teardown). */
  pids: number[];
  /** What the demo could not show in this run, and why. */
  notShown: string[];
  /** The web console's address during the run (…/console/); null when it served none. */
  console: string | null;
}

export interface DemoSecurity {
  /** Every API (CA, NIC, vSwitch, orchestrator) over mTLS with SPIFFE identities. */
  mtls: boolean;
  trustDomain: string | null;
  /** PSKs cross the orchestrator only sealed to the vSwitch instance (nic/psk-box.ts). */
  pskSealed: boolean;
  /** Scans of the orchestrator's memory for workload PSKs, and how many found one. */
  pskScans: number;
  pskScansWithHits: number;
}

export class DemoReporter {
  readonly result: DemoResult = {
    control: 'none',
    policy: 'none',
    security: { mtls: false, trustDomain: null, pskSealed: true, pskScans: 0, pskScansWithHits: 0 },
    checks: [],
    figures: {},
    pids: [],
    notShown: [],
    console: null,
  };
  private stepNo = 0;

  constructor(
    private readonly json: boolean,
    private readonly totalSteps: number,
    private readonly out: NodeJS.WritableStream = process.stdout,
    private readonly err: NodeJS.WritableStream = process.stderr,
  ) {}

  /** A progress or information line (stdout in plain mode, stderr with --json). */
  say(line: string): void {
    (this.json ? this.err : this.out).write(`${line}\n`);
  }

  /** Indented lines (tables, details). */
  show(lines: readonly string[], indent = '      '): void {
    for (const l of lines) this.say(`${indent}${l}`);
  }

  /** A numbered step; `n` jumps to that number (the teardown is always the last). */
  step(title: string, n?: number): void {
    this.stepNo = n ?? this.stepNo + 1;
    this.say(`\n[${this.stepNo}/${this.totalSteps}] ${title}`);
  }

  check(name: string, passed: boolean, detail = ''): boolean {
    this.result.checks.push({ name, passed, detail });
    this.say(`      ${passed ? 'PASS' : 'FAIL'}  ${name}${detail ? `: ${detail}` : ''}`);
    return passed;
  }

  figure(name: string, value: number): void {
    this.result.figures[name] = value;
  }

  notShown(what: string): void {
    this.result.notShown.push(what);
  }

  passed(): boolean {
    return this.result.checks.length > 0 && this.result.checks.every((c) => c.passed);
  }

  /** The closing lines, and with --json the JSON object on stdout. */
  finish(): void {
    const r = this.result;
    const ok = r.checks.filter((c) => c.passed).length;
    this.say(`\nresult: ${ok}/${r.checks.length} checks passed`);
    const f = r.figures;
    const shown = Object.entries(f).map(([k, v]) => `${k}=${v}`);
    if (shown.length > 0) this.say(`figures: ${shown.join(' ')}`);
    this.say(`control plane: ${r.control}`);
    this.say(`policy: ${r.policy}`);
    if (r.notShown.length > 0) {
      this.say('not shown in this run:');
      for (const n of r.notShown) this.say(`  - ${n}`);
    }
    if (this.json) this.out.write(`${JSON.stringify(r, null, 2)}\n`);
  }
}

/** Median of a non-empty list (the mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Aligned columns, one string per row. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const r of rows) for (const [i, c] of r.entries()) widths[i] = Math.max(widths[i] ?? 0, c.length);
  return rows.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd(),
  );
}
