#!/usr/bin/env bash
# Start (or install) what the tests need when it is missing: Redis, PostgreSQL, Chromium,
# docker-compose.
set -uo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! up 6379; then
  command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! up 5432; then
  if ! ls /etc/postgresql >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q postgresql
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
# Debian's Chromium for the browser tests (driven by Playwright's Python package; never
# `playwright install`, which downloads a browser build of its own).
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -q && apt-get install -y -q chromium fonts-dejavu-core
fi
# Debian's docker-compose (v1) for tests/test_compose.py: it only interpolates and validates the
# compose file (`docker-compose config`); no container engine is needed.
command -v docker-compose >/dev/null || { apt-get update -q && apt-get install -y -q docker-compose; }
for _ in $(seq 1 30); do up 6379 && up 5432 && break; sleep 1; done
up 6379 || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
up 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
