#!/usr/bin/env bash
# The paper's MuJoCo runs of EauDeSAC: 5 envs x 5 seeds, 1M env steps, K=5 critic pairs, alpha 3, beta 0.01, a
# population update every 1,000 env steps, critics of width small (256), medium (512) and large (1024), actor
# (256, 256): the envs, seeds and sizes of benchmark/polyprune_sac_mujoco.sh, 75 runs. W&B group paper_mujoco (with
# benchmark/polyprune_sac_mujoco.sh); set WANDB_TAGS to the git tag of the code.
# Through tools/launch.py (docs/experiments.md); the arguments choose where:
#   bash benchmark/eaudesac_mujoco.sh                        # here, one run at a time
#   bash benchmark/eaudesac_mujoco.sh local --workers 4      # 4 at a time (GPUs round-robin)
#   bash benchmark/eaudesac_mujoco.sh slurm --partition gpu  # one job array (rerun: resumes)
#   bash benchmark/eaudesac_mujoco.sh status                 # the state of every run
#   bash benchmark/eaudesac_mujoco.sh slurm --dry-run        # print sbatch script + commands
set -euo pipefail
ENVS=HalfCheetah-v4,Hopper-v4,Walker2d-v4,Ant-v4,Humanoid-v4
python "$(dirname "$0")/../tools/launch.py" "${@:-local}" --grid eaudesac_mujoco --wandb-group paper_mujoco \
  eaudesac_mujoco_jax.py --network-size small,medium,large --env-id "$ENVS" --seed 1,2,3,4,5 --population-size 5 \
    --selection-period 1000 --exp-name 'eaudesac_mujoco_jax_{network_size}' --track --save-model
