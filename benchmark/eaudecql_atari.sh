#!/usr/bin/env bash
# The paper's offline Atari runs of EauDeCQL: 10 games x 5 seeds, 50 epochs x 62,500 gradient steps, K=5, alpha 3,
# beta 0.01, the small (32) and medium (512) network: 100 runs.
# DATA_DIR holds the DQN Replay Dataset as published, relative to where the runs go:
# $DATA_DIR/<Game>/<run>/replay_logs/$store$_observation_ckpt.<i>.gz ...; RUN picks which of the dataset's 5 runs
# every seed trains on (default 1). W&B group paper_atari_offline (with benchmark/polyprune_cql_atari.sh); set WANDB_TAGS
# to the git tag of the code.
# Through tools/launch.py (docs/experiments.md); the arguments choose where:
#   bash benchmark/eaudecql_atari.sh                        # here, one run at a time
#   bash benchmark/eaudecql_atari.sh local --workers 4      # 4 at a time (GPUs round-robin)
#   bash benchmark/eaudecql_atari.sh slurm --partition gpu  # one job array (rerun: resumes)
#   bash benchmark/eaudecql_atari.sh status                 # the state of every run
#   bash benchmark/eaudecql_atari.sh slurm --dry-run        # print sbatch script + commands
set -euo pipefail
DATA_DIR="${DATA_DIR:-dqn-replay}"
RUN="${RUN:-1}"
GAMES="BeamRider MsPacman Qbert Pong Enduro SpaceInvaders Assault CrazyClimber Boxing VideoPinball"
ENV_IDS=$(printf 'ALE/%s-v5,' $GAMES)
python "$(dirname "$0")/../tools/launch.py" "${@:-local}" --grid eaudecql_atari --wandb-group paper_atari_offline \
  eaudecql_atari_jax.py --network-size small,medium --env-id "${ENV_IDS%,}" --seed 1,2,3,4,5 --population-size 5 \
    --dataset-dir "${DATA_DIR}/{game}/${RUN}/replay_logs" \
    --exp-name 'eaudecql_atari_jax_{network_size}' --track --save-model
