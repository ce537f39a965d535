#!/usr/bin/env bash
# The paper's online Atari comparison for PolyPruneDQN and dense DQN: 10 games x 5 seeds, 10M env steps each,
# the medium (512) and large (2048) network: 200 runs. W&B group paper_atari_online (with benchmark/eaudedqn_atari.sh);
# set WANDB_TAGS to the git tag of the code.
# Through tools/launch.py (docs/experiments.md); the arguments choose where:
#   bash benchmark/polyprune_dqn_atari.sh                        # here, one run at a time
#   bash benchmark/polyprune_dqn_atari.sh local --workers 4      # 4 at a time (GPUs round-robin)
#   bash benchmark/polyprune_dqn_atari.sh slurm --partition gpu  # one job array (rerun: resumes)
#   bash benchmark/polyprune_dqn_atari.sh status                 # the state of every run
#   bash benchmark/polyprune_dqn_atari.sh slurm --dry-run        # print sbatch script + commands
set -euo pipefail
GAMES="BeamRider MsPacman Qbert Pong Enduro SpaceInvaders Assault CrazyClimber Boxing VideoPinball"
ENV_IDS=$(printf 'ALE/%s-v5,' $GAMES)
python "$(dirname "$0")/../tools/launch.py" "${@:-local}" --grid polyprune_dqn_atari --wandb-group paper_atari_online \
  polyprune_dqn_atari_jax.py --network-size medium,large --env-id "${ENV_IDS%,}" --seed 1,2,3,4,5 \
    --exp-name 'polyprune_dqn_atari_jax_{network_size}' --track --save-model \
  polyprune_dqn_atari_jax.py --network-size medium,large --env-id "${ENV_IDS%,}" --seed 1,2,3,4,5 --final-sparsity 0 \
    --exp-name 'dqn_atari_jax_{network_size}' --track --save-model
