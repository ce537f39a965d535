#!/usr/bin/env bash
# The paper's offline Atari runs of EauDeCQL: 10 games x 5 seeds, 50 epochs x 62,500 gradient steps, K=5, alpha 3,
# beta 0.01, the small (32) and medium (512) network.
# DATA_DIR holds the DQN Replay Dataset as published: $DATA_DIR/<Game>/<run>/replay_logs/$store$_observation_ckpt.<i>.gz ...
# RUN picks which of the dataset's 5 runs every seed trains on (default 1). One run per GPU; set WANDB_TAGS to the
# git tag of the code.
set -euo pipefail
DATA_DIR="${DATA_DIR:-dqn-replay}"
RUN="${RUN:-1}"
GAMES="BeamRider MsPacman Qbert Pong Enduro SpaceInvaders Assault CrazyClimber Boxing VideoPinball"
for size in small medium; do
  for game in $GAMES; do
    for seed in 1 2 3 4 5; do
      python eaudecql_atari_jax.py --env-id "ALE/${game}-v5" --dataset-dir "${DATA_DIR}/${game}/${RUN}/replay_logs" \
        --seed "$seed" --network-size "$size" --population-size 5 --exp-name "eaudecql_atari_jax_${size}" --track --save-model
    done
  done
done
