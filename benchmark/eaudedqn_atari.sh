#!/usr/bin/env bash
# The paper's online Atari runs of EauDeDQN: 10 games x 5 seeds, 10M env steps, K=5, alpha 3, beta 0.01,
# the medium (512) and large (2048) network. One run per GPU; set WANDB_TAGS to the git tag of the code.
set -euo pipefail
GAMES="BeamRider MsPacman Qbert Pong Enduro SpaceInvaders Assault CrazyClimber Boxing VideoPinball"
for size in medium large; do
  for game in $GAMES; do
    for seed in 1 2 3 4 5; do
      python eaudedqn_atari_jax.py --env-id "ALE/${game}-v5" --seed "$seed" --network-size "$size" \
        --population-size 5 --exp-name "eaudedqn_atari_jax_${size}" --track --save-model
    done
  done
done
