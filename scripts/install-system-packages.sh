#!/usr/bin/env bash
# System packages UniRoute needs beyond Python, installed with apt when missing:
#   bubblewrap  the sandbox the code grader runs untrusted answers in (docs/ONBOARDING.md).
# Run by `make install` (and so by `make demo` and `make test`); a no-op when all are present.
set -euo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    run=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    run=(sudo -n)
else
    echo "missing system package(s): ${missing[*]}; install them with:" >&2
    echo "    sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system package(s): ${missing[*]}; install them with your package manager" >&2
    exit 1
fi
echo "installing system package(s): ${missing[*]}"
"${run[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
