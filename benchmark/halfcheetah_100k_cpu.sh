#!/usr/bin/env bash
# The CPU-scale reproduction in the README ("HalfCheetah-v4 at 100k steps"): dense SAC, PolyPruneSAC, EauDeSAC (K=5)
# and EauDeSAC K=1, HalfCheetah-v4, 100,000 env steps (PolyPrune's schedule and Eq. 3's horizon follow
# --total-timesteps), seeds 1-3, paper defaults otherwise. Runs go to ./runs; WORKERS runs at a time, each with
# single-threaded XLA (on a 2-core CPU, two such runs do ~1.7x the work of one run using both cores).
# Usage: WORKERS=2 SEEDS="1 2 3" ONLY="eaudesac_k5 sac" bash benchmark/halfcheetah_100k_cpu.sh
set -euo pipefail
WORKERS=${WORKERS:-2}
SEEDS=${SEEDS:-"1 2 3"}
ONLY=${ONLY:-"eaudesac_k5 sac eaudesac_k1 polyprune_sac"}
COMMON="--env-id HalfCheetah-v4 --total-timesteps 100000 --save-model"
commands=()
for what in $ONLY; do
  for seed in $SEEDS; do
    case $what in
      sac) commands+=("polyprune_sac_mujoco_jax.py $COMMON --seed $seed --final-sparsity 0 --exp-name sac_mujoco_jax") ;;
      polyprune_sac) commands+=("polyprune_sac_mujoco_jax.py $COMMON --seed $seed") ;;
      eaudesac_k5) commands+=("eaudesac_mujoco_jax.py $COMMON --seed $seed --population-size 5") ;;
      eaudesac_k1) commands+=("eaudesac_mujoco_jax.py $COMMON --seed $seed --population-size 1 --exp-name eaudesac_k1_mujoco_jax") ;;
      *) echo "unknown run kind '$what' (sac, polyprune_sac, eaudesac_k5, eaudesac_k1)" >&2; exit 2 ;;
    esac
  done
done
mkdir -p runs/logs
run_one() {  # script and flags; the log file is named after them
  local log; log="runs/logs/$(echo "$*" | tr -c 'a-zA-Z0-9_.\n-' '_' | cut -c1-150).log"
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" python "$@" > "$log" 2>&1 \
    && echo "done: $*" || echo "FAILED ($log): $*"
}
export -f run_one
printf '%s\n' "${commands[@]}" | xargs -P "$WORKERS" -L 1 bash -c 'run_one "$@"' _
