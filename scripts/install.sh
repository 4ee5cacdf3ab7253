#!/usr/bin/env bash
# Set up everything the gateway, its demo and its tests need, on a fresh machine:
# a virtualenv with the project and its dev tools, and a redis-server binary.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install redis
  else
    echo "Please install redis-server (6.2 or newer) and run this again." >&2
    exit 1
  fi
fi
echo "ready: $(.venv/bin/python --version), $(redis-server --version | cut -d' ' -f1-3)"
