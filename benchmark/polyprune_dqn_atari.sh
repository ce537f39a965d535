#!/usr/bin/env bash
# The paper's online Atari comparison for PolyPruneDQN and dense DQN: 10 games x 5 seeds, 10M env steps each,
# the medium (512) and large (2048) network. One run per GPU; set WANDB_TAGS to the git tag of the code.
set -euo pipefail
GAMES="BeamRider MsPacman Qbert Pong Enduro SpaceInvaders Assault CrazyClimber Boxing VideoPinball"
for size in medium large; do
  for game in $GAMES; do
    for seed in 1 2 3 4 5; do
      python polyprune_dqn_atari_jax.py --env-id "ALE/${game}-v5" --seed "$seed" --network-size "$size" \
        --exp-name "polyprune_dqn_atari_jax_${size}" --track --save-model
      python polyprune_dqn_atari_jax.py --env-id "ALE/${game}-v5" --seed "$seed" --network-size "$size" \
        --final-sparsity 0 --exp-name "dqn_atari_jax_${size}" --track --save-model
    done
  done
done
