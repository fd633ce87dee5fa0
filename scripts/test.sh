#!/usr/bin/env bash
# Runs the tests with node's own test runner, in one of two tiers:
#   main (`npm test`): lint (biome, scripts/check-imports.mjs), unit tests and (as root)
#     integration tests, test/unit and test/integration;
#   slow (`npm run test:slow`): test/slow, the tests that take minutes by design (1,000-workload
#     scale, rekeying after REKEY_AFTER_TIME under traffic, performance ratios, spin-up of 100
#     workloads, 20 s handshake floods at a device and a NIC). They need root.
# CI (.ci/run) runs the main tier, then the slow one.
# Integration tests build real namespaces, TUN devices and peers; they need root.
# The JSON log lines of the code under test go to a file, not the terminal (see
# test/helpers/quiet-reporter.ts); those of a failing test's file are printed after the summary.
set -euo pipefail
cd "$(dirname "$0")/.."

tier="${1:-main}"
reporter=(--test-reporter=./dist/test/helpers/quiet-reporter.js)
case "$tier" in
  main)
    npx biome check .
    node scripts/check-imports.mjs
    files=(dist/test/unit/*.test.js)
    if [ "$(id -u)" -eq 0 ]; then
      files+=(dist/test/integration/*.test.js)
    else
      echo "test: not root, integration tests skipped" >&2
    fi
    ;;
  slow)
    if [ "$(id -u)" -ne 0 ]; then
      echo "test: the slow tier needs root" >&2
      exit 1
    fi
    files=(dist/test/slow/*.test.js)
    ;;
  *)
    echo "usage: scripts/test.sh [main|slow]" >&2
    exit 2
    ;;
esac
# Integration tests share the machine's namespaces and CPU: run files one at a time.
exec node --test --test-concurrency=1 "${reporter[@]}" "${files[@]}"
