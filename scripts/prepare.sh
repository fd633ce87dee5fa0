#!/usr/bin/env bash
# Everything `npm test` and `npm run demo` need on a fresh machine: Debian packages, npm
# packages (which also builds the native addon), and the compiled TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [ ! -d node_modules/@noble/hashes ] || [ ! -x node_modules/.bin/tsc ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "prepare: installing npm packages (builds the native addon)" >&2
  npm install --no-fund --no-audit --loglevel=error
fi
if [ ! -f build/Release/tenguard_native.node ] || [ -n "$(find native binding.gyp -newer build/Release/tenguard_native.node 2>/dev/null | head -1)" ]; then
  echo "prepare: building the native addon" >&2
  npm run --silent install
fi
echo "prepare: compiling TypeScript" >&2
rm -rf dist
npx tsc -p tsconfig.json
