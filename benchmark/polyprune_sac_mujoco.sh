#!/usr/bin/env bash
# The paper's MuJoCo comparison for PolyPruneSAC and dense SAC: 5 envs x 5 seeds, 1M env steps each, critics of
# width small (256), medium (512) and large (1024), actor (256, 256). One run per GPU; set WANDB_TAGS to the git tag of the code.
set -euo pipefail
ENVS="HalfCheetah-v4 Hopper-v4 Walker2d-v4 Ant-v4 Humanoid-v4"
for size in small medium large; do
  for env in $ENVS; do
    for seed in 1 2 3 4 5; do
      python polyprune_sac_mujoco_jax.py --env-id "$env" --seed "$seed" --network-size "$size" \
        --exp-name "polyprune_sac_mujoco_jax_${size}" --track --save-model
      python polyprune_sac_mujoco_jax.py --env-id "$env" --seed "$seed" --network-size "$size" \
        --final-sparsity 0 --exp-name "sac_mujoco_jax_${size}" --track --save-model
    done
  done
done
