#!/usr/bin/env bash
# Install regnas on a fresh Debian or Ubuntu machine: Debian's Fashion-MNIST package, Python's venv
# module if missing, then a virtual environment in .venv with regnas in editable mode.
# Usage: bash scripts/install.sh [test]    ("test" also installs Chromium, pytest, ruff and mypy)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

packages="dataset-fashion-mnist"
if [ "${1:-}" = "test" ]; then
  # The browser tests drive headless Chromium, and the report's PNG export uses it too.
  packages="$packages chromium"
fi
if ! command -v python3 >/dev/null 2>&1; then
  packages="$packages python3 python3-venv"
elif ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  packages="$packages python3-venv"
fi
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null

if ! python3 -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
  echo "error: regnas needs Python 3.11 or newer; python3 is $(python3 --version)." >&2
  echo "Install a newer Python (for example with pyenv or deadsnakes) and rerun." >&2
  exit 1
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "Installed regnas into $(pwd)/.venv"
