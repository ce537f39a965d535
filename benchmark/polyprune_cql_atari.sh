#!/usr/bin/env bash
# The paper's offline Atari comparison for PolyPruneCQL and dense CQL: 10 games x 5 seeds, 50 epochs x 62,500 gradient
# steps each (5 random checkpoints x first 50,000 rows per epoch), the small (32) and medium (512) network: 200 runs.
# DATA_DIR holds the DQN Replay Dataset as published, relative to where the runs go:
# $DATA_DIR/<Game>/<run>/replay_logs/$store$_observation_ckpt.<i>.gz ...; RUN picks which of the dataset's 5 runs
# every seed trains on (default 1). W&B group paper_atari_offline (with benchmark/eaudecql_atari.sh); set WANDB_TAGS
# to the git tag of the code.
# Through tools/launch.py (docs/experiments.md); the arguments choose where:
#   bash benchmark/polyprune_cql_atari.sh                        # here, one run at a time
#   bash benchmark/polyprune_cql_atari.sh local --workers 4      # 4 at a time (GPUs round-robin)
#   bash benchmark/polyprune_cql_atari.sh slurm --partition gpu  # one job array (rerun: resumes)
#   bash benchmark/polyprune_cql_atari.sh status                 # the state of every run
#   bash benchmark/polyprune_cql_atari.sh slurm --dry-run        # print sbatch script + commands
set -euo pipefail
DATA_DIR="${DATA_DIR:-dqn-replay}"
RUN="${RUN:-1}"
GAMES="BeamRider MsPacman Qbert Pong Enduro SpaceInvaders Assault CrazyClimber Boxing VideoPinball"
ENV_IDS=$(printf 'ALE/%s-v5,' $GAMES)
python "$(dirname "$0")/../tools/launch.py" "${@:-local}" --grid polyprune_cql_atari --wandb-group paper_atari_offline \
  polyprune_cql_atari_jax.py --network-size small,medium --env-id "${ENV_IDS%,}" --seed 1,2,3,4,5 \
    --dataset-dir "${DATA_DIR}/{game}/${RUN}/replay_logs" \
    --exp-name 'polyprune_cql_atari_jax_{network_size}' --track --save-model \
  polyprune_cql_atari_jax.py --network-size small,medium --env-id "${ENV_IDS%,}" --seed 1,2,3,4,5 --final-sparsity 0 \
    --dataset-dir "${DATA_DIR}/{game}/${RUN}/replay_logs" \
    --exp-name 'cql_atari_jax_{network_size}' --track --save-model
