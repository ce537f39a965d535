#!/usr/bin/env bash
# The width and alpha study (docs/halfcheetah_width_alpha.md): does EauDeSAC discover more sparsity in larger critics and
# under a bolder alpha (Eq. 3)? HalfCheetah-v4, 100,000 env steps, paper defaults otherwise (Eq. 3's horizon and
# PolyPrune's schedule follow --total-timesteps). WORKERS runs at a time, each with single-threaded XLA and pinned to its
# own share of the CPUs (--pin-cpus): on the 2-core dev machine EauDeSAC K=5 (256) did 47-49 env steps/s as one run on
# both cores, 59 together as two single-threaded runs side by side, 83 when each is pinned to a core
# (docs/halfcheetah_width_alpha.md). WORKERS=1 runs one at a time on both cores. Runs go to WORKDIR/runs through
# tools/launch.py; the same command resumes what is unfinished and skips what is done. Groups start in the order
# below (cheap first). Then, to commit and rebuild:
#   python tools/results.py WORKDIR/runs --points 10 --export-compact docs/halfcheetah_width_alpha/compact_runs --out TMP
#   python tools/study_width_alpha.py docs/halfcheetah_width_alpha/compact_runs --out docs/halfcheetah_width_alpha
# Usage: WORKDIR=. WORKERS=2 SEEDS=1,2,3 bash benchmark/halfcheetah_width_alpha_cpu.sh [status | local --dry-run]
set -euo pipefail
WORKDIR=${WORKDIR:-.}
WORKERS=${WORKERS:-2}
SEEDS=${SEEDS:-1,2,3}
common=(--env-id HalfCheetah-v4 --total-timesteps 100000 --save-model --seed "$SEEDS")
grid=(
  # critic width at alpha 3 (the paper's "normal" regime), and dense SAC and PolyPruneSAC at the small width
  eaudesac_mujoco_jax.py --population-size 5 --network-size 64,32,128 "${common[@]}"
  polyprune_sac_mujoco_jax.py --final-sparsity 0 --exp-name sac_mujoco_jax --network-size 64 "${common[@]}"
  polyprune_sac_mujoco_jax.py --network-size 64 "${common[@]}"
  # a bolder alpha at width 64 (2x and 4x the paper's 3.0)
  eaudesac_mujoco_jax.py --population-size 5 --network-size 64 --alpha 6,12 "${common[@]}"
  # the large width's dense reference, then the large width
  polyprune_sac_mujoco_jax.py --final-sparsity 0 --exp-name sac_mujoco_jax --network-size 256 "${common[@]}"
  eaudesac_mujoco_jax.py --population-size 5 --network-size 256 "${common[@]}"
  # alpha 0 (no member is ever pruned; selection and copies as usual): one seed per width, a reference
  eaudesac_mujoco_jax.py --population-size 5 --alpha 0 --exp-name eaudesac_alpha0_mujoco_jax --network-size 32,64,128,256
  --env-id HalfCheetah-v4 --total-timesteps 100000 --save-model --seed 1
)
pin=(); [ "$WORKERS" = 1 ] || pin=(--pin-cpus)
[ $# -gt 0 ] || set -- local --workers "$WORKERS" "${pin[@]}"
[ "$WORKERS" = 1 ] || export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
cmd=$1; shift
python "$(dirname "$0")/../tools/launch.py" "$cmd" --workdir "$WORKDIR" --grid halfcheetah_width_alpha_cpu "$@" "${grid[@]}"
