"""A checkpoint written with --no-checkpoint-replay holds no replay rows: the resumed run starts an empty buffer, refills it
for --learning-starts steps while the episode in progress goes on, trains again, and finishes with a saved model."""
import glob
import os
import signal

import pytest
from test_checkpoint import argv, checkpoints, run, start_then_stop


@pytest.mark.parametrize("script", ["eaudedqn_atari_jax", "polyprune_sac_mujoco_jax"])
def test_resume_without_the_replay_buffer_refills_it_then_trains(script, tmp_path):
    cmd = [*argv(script, tmp_path), "--run-name", "r", "--checkpoint-frequency", "150", "--no-checkpoint-replay"]
    status, out = start_then_stop(cmd, tmp_path, str(tmp_path / "runs" / "r"), signal.SIGTERM)
    assert status in (75, 0), out[-2000:]
    (ckpt,) = checkpoints(tmp_path / "runs" / "r")
    assert not glob.glob(os.path.join(ckpt, "*.npy")), "the checkpoint must hold no replay arrays"
    resumed = run([*cmd, "--resume", "auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    step = int(os.path.basename(ckpt)[5:])
    assert f"training again after step {step + int(cmd[cmd.index('--learning-starts') + 1]):,}" in resumed.stdout
    assert os.path.isfile(tmp_path / "runs" / "r" / f"{script}.cleanrl_model")
