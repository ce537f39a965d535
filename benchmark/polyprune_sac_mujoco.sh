#!/usr/bin/env bash
# The paper's MuJoCo comparison for PolyPruneSAC and dense SAC: 5 envs x 5 seeds, 1M env steps each, critics of
# width small (256), medium (512) and large (1024), actor (256, 256): 150 runs. W&B group paper_mujoco (with
# benchmark/eaudesac_mujoco.sh); set WANDB_TAGS to the git tag of the code.
# Through tools/launch.py (docs/experiments.md); the arguments choose where:
#   bash benchmark/polyprune_sac_mujoco.sh                        # here, one run at a time
#   bash benchmark/polyprune_sac_mujoco.sh local --workers 4      # 4 at a time (GPUs round-robin)
#   bash benchmark/polyprune_sac_mujoco.sh slurm --partition gpu  # one job array (rerun: resumes)
#   bash benchmark/polyprune_sac_mujoco.sh status                 # the state of every run
#   bash benchmark/polyprune_sac_mujoco.sh slurm --dry-run        # print sbatch script + commands
set -euo pipefail
ENVS=HalfCheetah-v4,Hopper-v4,Walker2d-v4,Ant-v4,Humanoid-v4
python "$(dirname "$0")/../tools/launch.py" "${@:-local}" --grid polyprune_sac_mujoco --wandb-group paper_mujoco \
  polyprune_sac_mujoco_jax.py --network-size small,medium,large --env-id "$ENVS" --seed 1,2,3,4,5 \
    --exp-name 'polyprune_sac_mujoco_jax_{network_size}' --track --save-model \
  polyprune_sac_mujoco_jax.py --network-size small,medium,large --env-id "$ENVS" --seed 1,2,3,4,5 --final-sparsity 0 \
    --exp-name 'sac_mujoco_jax_{network_size}' --track --save-model
