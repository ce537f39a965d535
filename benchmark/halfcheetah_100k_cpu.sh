#!/usr/bin/env bash
# The CPU-scale reproduction in docs/halfcheetah_100k.md: dense SAC, PolyPruneSAC, EauDeSAC (K=5)
# and EauDeSAC K=1, HalfCheetah-v4, 100,000 env steps (PolyPrune's schedule and Eq. 3's horizon follow
# --total-timesteps), seeds 1-3, paper defaults otherwise. Runs go to ./runs through tools/launch.py's local pool:
# WORKERS runs at a time, each with single-threaded XLA (on a 2-core CPU, two such runs do ~1.7x the work of one run
# using both cores); run it again to resume what is unfinished. Other arguments replace `local --workers WORKERS`:
# Usage: WORKERS=2 SEEDS="1 2 3" ONLY="eaudesac_k5 sac" bash benchmark/halfcheetah_100k_cpu.sh [status | local --dry-run]
set -euo pipefail
WORKERS=${WORKERS:-2}
SEEDS=${SEEDS:-"1 2 3"}
ONLY=${ONLY:-"eaudesac_k5 sac eaudesac_k1 polyprune_sac"}
# Seed-major order: every kind's seed 1 first, then seed 2, ..., so a stopped grid leaves complete seed sets.
grid=()
for seed in $SEEDS; do
for what in $ONLY; do
  case $what in
    sac) grid+=(polyprune_sac_mujoco_jax.py --final-sparsity 0 --exp-name sac_mujoco_jax) ;;
    polyprune_sac) grid+=(polyprune_sac_mujoco_jax.py) ;;
    eaudesac_k5) grid+=(eaudesac_mujoco_jax.py --population-size 5) ;;
    eaudesac_k1) grid+=(eaudesac_mujoco_jax.py --population-size 1 --exp-name eaudesac_k1_mujoco_jax) ;;
    # Ablation (not in the default ONLY): K=5 with Eq. 3's xi ~ U(0, 0), so no member is ever pruned, while selection,
    # tournament copies and Adam resets run as in eaudesac_k5. Separates the population mechanics from the pruning.
    eaudesac_k5_alpha0) grid+=(eaudesac_mujoco_jax.py --population-size 5 --alpha 0 --exp-name eaudesac_k5_alpha0_mujoco_jax) ;;
    *) echo "unknown run kind '$what' (sac, polyprune_sac, eaudesac_k5, eaudesac_k1, eaudesac_k5_alpha0)" >&2; exit 2 ;;
  esac
  grid+=(--env-id HalfCheetah-v4 --total-timesteps 100000 --save-model --seed "$seed")
done
done
[ $# -gt 0 ] || set -- local --workers "$WORKERS"
XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  python "$(dirname "$0")/../tools/launch.py" "$@" --grid halfcheetah_100k_cpu "${grid[@]}"
