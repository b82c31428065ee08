#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv and install the package with its
# extras. Idempotent: reinstalls only when pyproject.toml changed. Sourced by the other
# scripts; prints nothing when there is nothing to do.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.installed-$(sha1sum "$root/pyproject.toml" | cut -c1-12)"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv in $venv" >&2
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ]; then
  echo "installing flask_jobmetrics[dev,redis,prometheus,docs,bench] into $venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -e "$root[dev,redis,prometheus,docs,bench]" >&2
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
