#!/usr/bin/env node
// Entry point of the tenguard CLI: the compiled TypeScript lives in dist/.
import { main } from '../dist/src/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`tenguard: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
