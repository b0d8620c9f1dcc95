#!/usr/bin/env bash
# Run every benchmark in bench/ one after the other (each prints its own ratio against a peer).
# Benchmarks that need the lab (root, network namespaces) bring it up themselves.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for bench in bench/*.py; do
  echo "== ${bench}"
  python "${bench}" || status=1
done
exit "${status}"
