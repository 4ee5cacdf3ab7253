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
# and docker-compose (validates docker-compose.yml), and Debian's prometheus package for its
# promtool (checks and unit-tests the alerting rules; its server is not needed and not started).
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
    command -v promtool >/dev/null 2>&1 || brew install prometheus
    echo "chromium and docker-compose: install them to run the Flower and compose tests" >&2
  else
    echo "Please install redis-server (6.2 or newer) and run this again." >&2
    exit 1
  fi
fi
# promtool alone is needed: no recommended exporters, and the server the package starts (where
# systemd runs) is stopped and disabled, so that nothing listens on port 9090.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: prometheus (for promtool)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
echo "ready: $(.venv/bin/python --version), $(redis-server --version | cut -d' ' -f1-3)"
