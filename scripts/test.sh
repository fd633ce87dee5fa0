#!/usr/bin/env bash
# Runs lint, unit tests and (as root) integration tests, with node's own test runner.
# Integration tests build real namespaces, TUN devices and peers; they need root.
set -euo pipefail
cd "$(dirname "$0")/.."

npx biome check .

files=(dist/test/unit/*.test.js)
if [ "$(id -u)" -eq 0 ]; then
  files+=(dist/test/integration/*.test.js)
else
  echo "test: not root, integration tests skipped" >&2
fi
# Integration tests share the machine's namespaces and CPU: run files one at a time.
exec node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
