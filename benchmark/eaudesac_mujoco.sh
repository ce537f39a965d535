#!/usr/bin/env bash
# The paper's MuJoCo runs of EauDeSAC: 5 envs x 5 seeds, 1M env steps, K=5 critic pairs, alpha 3, beta 0.01, a
# population update every 1,000 env steps, critics of width small (256), medium (512) and large (1024), actor
# (256, 256): the envs, seeds and sizes of benchmark/polyprune_sac_mujoco.sh. One run per GPU; set WANDB_TAGS to the
# git tag of the code.
set -euo pipefail
ENVS="HalfCheetah-v4 Hopper-v4 Walker2d-v4 Ant-v4 Humanoid-v4"
for size in small medium large; do
  for env in $ENVS; do
    for seed in 1 2 3 4 5; do
      python eaudesac_mujoco_jax.py --env-id "$env" --seed "$seed" --network-size "$size" \
        --population-size 5 --selection-period 1000 --exp-name "eaudesac_mujoco_jax_${size}" --track --save-model
    done
  done
done
