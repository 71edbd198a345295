#!/usr/bin/env bash
# Run the whole test suite: set up, make sure the services the tests talk to are up, lint, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
.venv/bin/ruff check bamsprod core app worker tests benchmarks
mkdir -p artifacts
.venv/bin/pytest "$@"
