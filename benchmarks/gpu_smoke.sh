#!/usr/bin/env bash
# A few PPO and DPO steps on ONE GPU under DeepSpeed ZeRO-3, FSDP2 and the vLLM rollout engine; prints each
# case's throughput and peak GPU memory (one "GPU_SMOKE {json}" line per case, then a summary).
#
#   bash benchmarks/gpu_smoke.sh            # from the repository root, in the environment that has prefalign
#   STEPS=6 OUT=/tmp/smoke bash benchmarks/gpu_smoke.sh
#
# Needs a CUDA GPU; ZeRO-3 needs `pip install deepspeed`, the vLLM case `pip install 'prefalign[vllm]'`
# (a case whose package is missing is reported as skipped). PPO with a critic runs under ZeRO-3 with one
# DeepSpeed engine per trained model (stopped half way and resumed, so each engine's checkpoint is saved and
# loaded), and with the critic's engine on ZeRO-2 (--critic_deepspeed_config); also under FSDP2, plain, and with
# vLLM. Cases run one after the other; one failing does not stop the others, and the script exits non-zero if any
# failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ACCELERATE=${ACCELERATE:-accelerate}
STEPS=${STEPS:-4}
OUT=${OUT:-$(mktemp -d -t prefalign-gpu-smoke-XXXXXX)}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_smoke: no CUDA GPU visible to torch; nothing run" >&2
  exit 2
fi
has() { "$PYTHON" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('$1') else 1)"; }

failed=0
summary=()
run_case() {  # name, accelerate config ("" for none), trainer, extra args...
  local name=$1 config=$2 trainer=$3
  shift 3
  local launch=("$ACCELERATE" launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no)
  [ -n "$config" ] && launch+=(--config_file "$config")
  echo "== $name" >&2
  local log="$OUT/$name.log"
  if "${launch[@]}" benchmarks/gpu_smoke.py "$trainer" --out "$OUT/$name" --steps "$STEPS" "$@" >"$log" 2>&1; then
    local line
    line=$(grep '^GPU_SMOKE ' "$log" | tail -1)
    echo "$line"
    summary+=("$name: ${line#GPU_SMOKE }")
  else
    failed=1
    summary+=("$name: FAILED (log: $log)")
    tail -20 "$log" >&2
  fi
}

if has deepspeed; then
  run_case dpo-zero3 recipes/accelerate/zero3.yaml dpo
  run_case ppo-zero3 recipes/accelerate/zero3.yaml ppo --resume-check
  run_case ppo-zero3-critic-zero2 recipes/accelerate/zero3.yaml ppo \
    --critic-deepspeed-config recipes/accelerate/ds_zero2.json
else
  summary+=("dpo-zero3, ppo-zero3, ppo-zero3-critic-zero2: skipped (deepspeed not installed)")
fi
run_case dpo-fsdp2 recipes/accelerate/fsdp2.yaml dpo
run_case ppo-fsdp2 recipes/accelerate/fsdp2.yaml ppo
run_case ppo-builtin "" ppo
if has vllm; then
  run_case ppo-vllm "" ppo --engine vllm
else
  summary+=("ppo-vllm: skipped (vllm not installed)")
fi

echo "== summary (STEPS=$STEPS, logs in $OUT)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
printf '%s\n' "${summary[@]}"
exit $failed
