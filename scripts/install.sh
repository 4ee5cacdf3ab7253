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
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'

# System packages: redis-server (required), rabbitmq-server (the tests run the broker tests on
# RabbitMQ too), and for the tests of the operations tooling headless Chromium (Flower's pages)
# and docker-compose (validates docker-compose.yml).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian keeps rabbitmq-server in /usr/sbin, which a non-root PATH may lack.
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    command -v redis-server >/dev/null 2>&1 || brew install redis
    command -v rabbitmq-server >/dev/null 2>&1 || brew install rabbitmq
    echo "chromium and docker-compose: install them to run the Flower and compose tests" >&2
  else
    echo "Please install redis-server (6.2 or newer) and run this again." >&2
    exit 1
  fi
fi
echo "ready: $(.venv/bin/python --version), $(redis-server --version | cut -d' ' -f1-3)"
