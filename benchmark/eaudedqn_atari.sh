#!/usr/bin/env bash
# The paper's online Atari runs of EauDeDQN: 10 games x 5 seeds, 10M env steps, K=5, alpha 3, beta 0.01,
# the medium (512) and large (2048) network: 100 runs. W&B group paper_atari_online (with
# benchmark/polyprune_dqn_atari.sh); set WANDB_TAGS to the git tag of the code.
# Through tools/launch.py (docs/experiments.md); the arguments choose where:
#   bash benchmark/eaudedqn_atari.sh                        # here, one run at a time
#   bash benchmark/eaudedqn_atari.sh local --workers 4      # 4 at a time (GPUs round-robin)
#   bash benchmark/eaudedqn_atari.sh slurm --partition gpu  # one job array (rerun: resumes)
#   bash benchmark/eaudedqn_atari.sh status                 # the state of every run
#   bash benchmark/eaudedqn_atari.sh slurm --dry-run        # print sbatch script + commands
set -euo pipefail
GAMES="BeamRider MsPacman Qbert Pong Enduro SpaceInvaders Assault CrazyClimber Boxing VideoPinball"
ENV_IDS=$(printf 'ALE/%s-v5,' $GAMES)
python "$(dirname "$0")/../tools/launch.py" "${@:-local}" --grid eaudedqn_atari --wandb-group paper_atari_online \
  eaudedqn_atari_jax.py --network-size medium,large --env-id "${ENV_IDS%,}" --seed 1,2,3,4,5 --population-size 5 \
    --exp-name 'eaudedqn_atari_jax_{network_size}' --track --save-model
