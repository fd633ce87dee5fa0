// `npm run fuzz`: runs every fuzz target (or those named) for a bounded time each and prints
// executions, rate, corpus and findings per target; exit status 1 when a target found something.
//
//   node dist/test/fuzz/main.js [--seconds N] [--runs N] [--target a,b] [--seed N]
//                               [--slow-ms N] [--corpus-out DIR] [--trace-input FILE] [--findings DIR]
//                               [--json] [--list]
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// The code under test logs through pino at module load: quiet unless asked otherwise.
process.env.TENGUARD_LOG_LEVEL ??= 'silent';

const { runTarget } = await import('./runner.js');
const { EngineInboundTarget } = await import('./targets/engine-inbound.js');
const { UapiTarget, UapiSocketTarget } = await import('./targets/uapi.js');
const { PolicyTarget } = await import('./targets/policy.js');
const { NicApiTarget, VSwitchApiTarget, OrchestratorApiTarget } = await import('./targets/api.js');
const { cniTarget } = await import('./targets/cni.js');
type FuzzTarget = import('./target.js').FuzzTarget;

const TARGETS: (() => FuzzTarget | null)[] = [
  () => new EngineInboundTarget(),
  () => new UapiTarget(),
  () => new UapiSocketTarget(),
  () => new PolicyTarget(),
  () => new NicApiTarget(),
  () => new VSwitchApiTarget(),
  () => new OrchestratorApiTarget(),
  cniTarget,
];

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    runs: { type: 'string' },
    target: { type: 'string' },
    seed: { type: 'string', default: '1' },
    'slow-ms': { type: 'string', default: '10000' },
    'corpus-out': { type: 'string' },
    'trace-input': { type: 'string' },
    findings: { type: 'string', default: 'fuzz-findings' },
    json: { type: 'boolean', default: false },
    list: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
  strict: true,
});

if (values.help) {
  console.log(
    'usage: npm run fuzz -- [--seconds N (60)] [--runs N] [--target a,b] [--seed N (1)] [--slow-ms N (10000)]\n' +
      '                       [--corpus-out DIR] [--trace-input FILE] [--findings DIR (fuzz-findings)] [--json] [--list]',
  );
  process.exit(0);
}

function positive(name: string, text: string | undefined): number {
  if (text === undefined) return Number.POSITIVE_INFINITY;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`fuzz: --${name} takes a positive number, not '${text}'`);
    process.exit(2);
  }
  return n;
}

const all = TARGETS.map((make) => make()).filter((t): t is FuzzTarget => t !== null);
if (values.list) {
  for (const t of all) console.log(`${t.name.padEnd(18)} ${t.description}`);
  process.exit(0);
}
const wanted = values.target?.split(',').filter((s) => s.length > 0);
const unknown = wanted?.filter((w) => !all.some((t) => t.name === w)) ?? [];
if (unknown.length > 0) {
  console.error(`fuzz: no target ${unknown.join(', ')} (see --list)`);
  process.exit(2);
}
const chosen = wanted === undefined ? all : all.filter((t) => wanted.includes(t.name));
const corpusDir = fileURLToPath(new URL('../../../test/fuzz/corpus', import.meta.url));
const results = [];
for (const target of chosen) {
  const r = await runTarget(target, {
    seconds: positive('seconds', values.seconds),
    runs: positive('runs', values.runs),
    seed: Number(values.seed),
    slowMs: positive('slow-ms', values['slow-ms']),
    corpusDir,
    findingsDir: values.findings!,
    corpusOut: values['corpus-out'],
    traceInput: values['trace-input'],
    progress: (line) => console.error(`fuzz: ${line}`),
  });
  results.push(r);
  if (!values.json) {
    console.log(
      `${r.finding === null ? 'ok  ' : 'FAIL'} ${r.target.padEnd(18)} ${String(r.executions).padStart(9)} executions in ${r.seconds} s (${r.execsPerSecond}/s); seeds ${r.seeds}, corpus ${r.corpus}, outcomes ${r.signatures}`,
    );
    if (r.finding !== null)
      console.log(
        `     ${r.finding.kind}: ${r.finding.file}\n     ${r.finding.message.split('\n').join('\n     ')}`,
      );
  }
}
if (values.json) console.log(JSON.stringify({ seed: Number(values.seed), results }, null, 2));
const failed = results.filter((r) => r.finding !== null).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
