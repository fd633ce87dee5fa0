// The test runner's reporter for `npm test` and `npm run test:slow`: node's spec reporter,
// with the JSON log lines the code under test writes (pino, one object a line) kept out of the
// terminal. Every line a test file writes to stdout or stderr goes to the log file named by
// TENGUARD_TEST_LOG (a file under the system's temp dir when unset); lines that are not log
// lines (figures, notes) still reach the terminal. When a test fails, the log lines of its file
// (the last MAX_SHOWN of them) are printed after the summary, then the log file's path.
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { spec, type TestEvent } from 'node:test/reporters';

const MAX_SHOWN = 200;
/** The start of every line pino writes (see src/util/log.ts). */
const LOG_LINE = /^\{"level":\d+,/;

function logPath(): string {
  const named = process.env.TENGUARD_TEST_LOG;
  if (named !== undefined && named !== '') return named;
  return join(tmpdir(), `tenguard-test-${new Date().toISOString().replace(/[:.]/g, '-')}.log`);
}

export default async function* quietReporter(
  source: AsyncGenerator<TestEvent, void>,
): AsyncGenerator<string | Buffer, void> {
  const file = logPath();
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, '');
  const held = new Map<string, string[]>();
  const failed = new Set<string>();

  async function* filtered(): AsyncGenerator<TestEvent, void> {
    for await (const event of source) {
      if (event.type === 'test:stderr' || event.type === 'test:stdout') {
        const from = event.data.file ?? '(runner)';
        const line = event.data.message;
        appendFileSync(file, `${relative(process.cwd(), from)}: ${line.endsWith('\n') ? line : `${line}\n`}`);
        if (LOG_LINE.test(line)) {
          const lines = held.get(from) ?? [];
          lines.push(line.trimEnd());
          if (lines.length > MAX_SHOWN) lines.shift();
          held.set(from, lines);
          continue;
        }
      } else if (event.type === 'test:fail' && event.data.file !== undefined) {
        failed.add(event.data.file);
      }
      yield event;
    }
  }

  yield* Readable.from(filtered()).pipe(new spec());
  for (const from of failed) {
    const lines = held.get(from);
    if (lines === undefined || lines.length === 0) continue;
    yield `\nlog lines of ${relative(process.cwd(), from)} (last ${lines.length}):\n${lines.join('\n')}\n`;
  }
  yield `\ntest output and logs: ${file}\n`;
}
