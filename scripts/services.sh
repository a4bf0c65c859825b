#!/usr/bin/env bash
# Starts the services the storage tests use — Debian's PostgreSQL and a Redis on
# 127.0.0.1 — and prints the environment that points the tests at them. Safe to run again.
set -euo pipefail
# Only the export lines may reach stdout (callers eval it): keep fd 3 for them and send
# every tool's own output (e.g. pg_ctlcluster's "Removed stale pid file.") to stderr.
# Daemons get fd 3 closed, or they would hold the caller's $(...) open forever.
exec 3>&1 1>&2
log() { printf '[services] %s\n' "$*"; }

if command -v pg_ctlcluster >/dev/null 2>&1; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_lsclusters -h 2>/dev/null | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null
  as_pg() { su postgres -s /bin/sh -c "$1"; }
  # A connection, not `pg_ctlcluster status`: after a hard stop the stale pid file's
  # number may belong to another process and status would report the cluster running.
  as_pg "psql -qtAc 'SELECT 1'" >/dev/null 2>&1 || pg_ctlcluster "$ver" main start 3>&-
  for _ in $(seq 1 30); do as_pg "psql -qtAc 'SELECT 1'" >/dev/null 2>&1 && break; sleep 0.5; done
  as_pg "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = 'moat'\"" | grep -q 1 || as_pg "psql -qc \"CREATE ROLE moat LOGIN PASSWORD 'moat'\""
  as_pg "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname = 'moat_test'\"" | grep -q 1 || as_pg "createdb -O moat moat_test"
  log "PostgreSQL $ver on 127.0.0.1:5432"
  echo >&3 "export MOAT_TEST_POSTGRES_URL=postgres://moat:moat@127.0.0.1:5432/moat_test"
else
  log "PostgreSQL not installed: its storage tests will be skipped"
fi

if command -v redis-server >/dev/null 2>&1; then
  # Persistence (an fsync'ed append-only file every second) so a restart keeps the replay
  # cache; the verifier does not rely on it alone: its epoch marker notices a lost cache.
  redis_dir="${TMPDIR:-/tmp}/moat-redis-6399"
  mkdir -p "$redis_dir"
  redis-cli -p 6399 ping >/dev/null 2>&1 || redis-server --port 6399 --bind 127.0.0.1 --daemonize yes --dir "$redis_dir" --save '' --appendonly yes --appendfsync everysec >/dev/null 3>&-
  for _ in $(seq 1 30); do redis-cli -p 6399 ping >/dev/null 2>&1 && break; sleep 0.2; done
  log "Redis on 127.0.0.1:6399"
  echo >&3 "export MOAT_TEST_REDIS_URL=redis://127.0.0.1:6399"
else
  log "Redis not installed: its storage tests will be skipped"
fi
