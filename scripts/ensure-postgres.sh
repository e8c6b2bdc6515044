#!/usr/bin/env bash
# The store tests start a throwaway PostgreSQL server (127.0.0.1 only) and stop it afterwards;
# this makes sure its binaries are installed.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found; install them (e.g. apt-get install postgresql)" >&2
  exit 2
fi
echo "installing PostgreSQL server binaries for the tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
