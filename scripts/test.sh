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
if [ "$(id -u)" -ne 0 ]; then
  exec node --test --test-concurrency=1 "${reporter[@]}" "${files[@]}"
fi
# As root, the namespaces and links named tg... that the run made and did not remove are
# removed afterwards, also when the run is ended by a signal (scripts/sweep-test-namespaces.mjs);
# after a run that ended by itself, any such leftover fails the tier.
before="$(mktemp /tmp/tenguard-test-names.XXXXXX)"
node scripts/sweep-test-namespaces.mjs --record "$before"
node --test --test-concurrency=1 "${reporter[@]}" "${files[@]}" &
runner=$!
interrupted() {
  trap - INT TERM
  kill -TERM "$runner" 2>/dev/null || true
  wait "$runner" 2>/dev/null || true
  node scripts/sweep-test-namespaces.mjs --sweep "$before" --interrupted || true
  rm -f "$before"
  exit 143
}
trap interrupted INT TERM
rc=0
wait "$runner" || rc=$?
trap - INT TERM
node scripts/sweep-test-namespaces.mjs --sweep "$before" || rc=1
rm -f "$before"
exit "$rc"
