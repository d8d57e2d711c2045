#!/usr/bin/env bash
# System packages UniRoute needs beyond Python, installed with apt when missing:
#   bubblewrap     the sandbox the code grader runs untrusted answers in (docs/ONBOARDING.md);
#   postgresql-15  the server the registry tests run a throwaway cluster of (docs/POOL.md,
#                  "PostgreSQL registry"); only its binaries are used, the packaged cluster is
#                  not needed (Debian's `postgresql` package is taken when 15 is not offered);
#   haproxy        the load balancer of deploy/haproxy.cfg, which the rolling-restart test runs;
#   chromium, chromium-driver  the headless browser the dashboard's tests drive (docs/DASHBOARD.md).
# Run by `make install` (and so by `make demo` and `make test`); a no-op when all are present.
set -euo pipefail

PG_BIN=${UNIROUTE_PG_BIN:-/usr/lib/postgresql/15/bin}

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
postgres_missing=false
[ -x "$PG_BIN/postgres" ] || postgres_missing=true
if [ ${#missing[@]} -eq 0 ] && [ "$postgres_missing" = false ]; then
    exit 0
fi
wanted=("${missing[@]}")
$postgres_missing && wanted+=(postgresql-15)

if [ "$(id -u)" -eq 0 ]; then
    run=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    run=(sudo -n)
else
    echo "missing system package(s): ${wanted[*]}; install them with:" >&2
    echo "    sudo apt-get install ${wanted[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system package(s): ${wanted[*]}; install them with your package manager" >&2
    exit 1
fi
"${run[@]}" apt-get update -qq
if $postgres_missing; then
    # Debian 12 ships PostgreSQL 15 as postgresql-15; elsewhere take the distribution's default.
    if apt-cache show postgresql-15 >/dev/null 2>&1; then
        missing+=(postgresql-15)
    else
        missing+=(postgresql)
    fi
fi
echo "installing system package(s): ${missing[*]}"
DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
if $postgres_missing && [ ! -x "$PG_BIN/postgres" ]; then
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    echo "installed PostgreSQL, but not version 15: its server is in ${found:-an unknown place};" >&2
    echo "    point the tests at it with UNIROUTE_PG_BIN=${found:-DIR}" >&2
fi
