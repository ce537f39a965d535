"""Shared test configuration: every script joins the suite by being listed here, not by copying tests."""
import importlib
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# one persistent JAX compilation cache for the session: the many subprocess runs of the same scripts (smoke, resume,
# results) compile each program once instead of once per process (subprocesses inherit os.environ)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="eaudeqn-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# script module -> what it is (family: environment family, kind: method)
SCRIPTS = {
    "polyprune_dqn_atari_jax": {"family": "atari", "kind": "polyprune_dqn"},
    "eaudedqn_atari_jax": {"family": "atari", "kind": "eaudedqn"},
    "polyprune_sac_mujoco_jax": {"family": "mujoco", "kind": "polyprune_sac"},
    "polyprune_cql_atari_jax": {"family": "atari_offline", "kind": "polyprune_cql"},
    "eaudecql_atari_jax": {"family": "atari_offline", "kind": "eaudecql"},
    "eaudesac_mujoco_jax": {"family": "mujoco", "kind": "eaudesac"},
}


def offline_dataset(tmp_path):
    """SMOKE "setup" of the offline scripts: writes a tiny dataset in the DQN Replay format (2 checkpoints of 400 rows
    played by a random policy) under tmp_path and returns the flags pointing at it."""
    from tools.make_dqn_replay_dataset import Args as DatasetArgs
    from tools.make_dqn_replay_dataset import generate

    generate(DatasetArgs(out=str(tmp_path / "data"), num_checkpoints=2, rows_per_checkpoint=400, max_episode_steps=100,
                         compresslevel=1), quiet=True)
    return ["--dataset-dir", str(tmp_path / "data" / "replay_logs")]


# Smoke runs (subprocess, tiny steps, compressed schedules): the flags of each script's one run, which
# tests/test_smoke.py checks against the metric table (docs/metrics.md) and the saved model. Optional "setup":
# tmp_path -> extra flags, run first (e.g. writes a dataset). Schedules are read back from the run's args.json.
SMOKE = {
    # episodes cut at 50 steps (training and evaluation), so episode stats are logged; epsilon reaches its floor at 200
    "polyprune_dqn_atari_jax": {
        "argv": ["--total-timesteps", "400", "--learning-starts", "100", "--buffer-size", "300", "--batch-size", "4",
                 "--pruning-frequency", "40", "--target-update-period", "100", "--network-size", "small",
                 "--final-sparsity", "0.9", "--save-model", "--eval-episodes", "2", "--max-episode-steps", "50",
                 "--exploration-steps", "200"],
    },
    # K=2 with tournaments of 2: every target update copies k* into the other slot; with this seed (and episodes of 200
    # steps, which score points) a copy is selected at step 500, so the target ends sparse
    "eaudedqn_atari_jax": {
        "argv": ["--total-timesteps", "800", "--learning-starts", "100", "--buffer-size", "800", "--batch-size", "4",
                 "--target-update-period", "100", "--population-size", "2", "--tournament-size", "2", "--beta", "0.5",
                 "--network-size", "small", "--save-model", "--eval-episodes", "2", "--max-episode-steps", "200",
                 "--exploration-steps", "200"],
    },
    # Hopper ends episodes early under random actions, so terminations, final rows and episode stats are exercised
    "polyprune_sac_mujoco_jax": {
        "argv": ["--env-id", "Hopper-v4", "--total-timesteps", "300", "--learning-starts", "100", "--batch-size", "32",
                 "--buffer-size", "400", "--pruning-frequency", "20", "--final-sparsity", "0.9", "--save-model",
                 "--eval-episodes", "1", "--eval-frequency", "200"],
    },
    "polyprune_cql_atari_jax": {
        "setup": offline_dataset,
        "argv": ["--epochs", "2", "--steps-per-epoch", "100", "--batch-size", "4", "--network-size", "small",
                 "--target-update-period", "50", "--pruning-frequency", "20", "--final-sparsity", "0.9", "--save-model",
                 "--eval-episodes", "1", "--max-episode-steps", "50"],
    },
    "eaudecql_atari_jax": {
        "setup": offline_dataset,
        "argv": ["--epochs", "2", "--steps-per-epoch", "200", "--batch-size", "4", "--network-size", "small",
                 "--target-update-period", "50", "--population-size", "2", "--tournament-size", "2", "--beta", "0.5",
                 "--save-model", "--eval-episodes", "1", "--max-episode-steps", "50"],
    },
    # K=2 with tournaments of 2: every population update copies k* into the other slot (beta 0.1 keeps the copies
    # competitive); with this seed a copy is selected at step 250, so the selected member ends sparse
    "eaudesac_mujoco_jax": {
        "argv": ["--env-id", "Hopper-v4", "--total-timesteps", "600", "--learning-starts", "100", "--batch-size", "32",
                 "--buffer-size", "700", "--selection-period", "50", "--population-size", "2", "--tournament-size", "2",
                 "--beta", "0.1", "--seed", "1", "--save-model", "--eval-episodes", "1", "--eval-frequency", "400"],
    },
}

# Bad flags: (argv, a piece of the one-line error that must name the problem)
BAD_FLAGS = {
    "polyprune_dqn_atari_jax": [
        (["--final-sparsity", "1.0"], "--final-sparsity"),
        (["--final-sparsity", "-0.1"], "--final-sparsity"),
        (["--pruning-start", "0.9", "--pruning-end", "0.5"], "--pruning-start"),
        (["--batch-size", "64", "--buffer-size", "32"], "--buffer-size"),
        (["--learning-starts", "2000", "--total-timesteps", "1000"], "--learning-starts"),
        (["--env-id", "ALE/NoSuchGame-v5"], "ALE/NoSuchGame-v5"),
        (["--env-id", "CartPole-v1"], "not an ALE"),
        (["--network-size", "huge"], "--network-size"),
        (["--buffer-size", "100000000000"], "--buffer-size"),
        (["--gamma", "1.5"], "--gamma"),
    ],
    "eaudedqn_atari_jax": [
        (["--population-size", "0"], "--population-size"),
        (["--population-size", "2"], "--tournament-size"),
        (["--tournament-size", "0"], "--tournament-size"),
        (["--alpha", "-1"], "--alpha"),
        (["--beta", "1.5"], "--beta"),
        (["--target-update-period", "8002"], "--target-update-period"),
        (["--batch-size", "64", "--buffer-size", "32"], "--buffer-size"),
        (["--learning-starts", "2000", "--total-timesteps", "1000"], "--learning-starts"),
        (["--env-id", "ALE/NoSuchGame-v5"], "ALE/NoSuchGame-v5"),
        (["--network-size", "0"], "--network-size"),
    ],
    "polyprune_sac_mujoco_jax": [
        (["--final-sparsity", "1.0"], "--final-sparsity"),
        (["--final-sparsity", "-0.1"], "--final-sparsity"),
        (["--pruning-start", "0.9", "--pruning-end", "0.5"], "--pruning-start"),
        (["--batch-size", "64", "--buffer-size", "32"], "--buffer-size"),
        (["--learning-starts", "2000", "--total-timesteps", "1000"], "--learning-starts"),
        (["--env-id", "NoSuchRobot-v4"], "NoSuchRobot-v4"),
        (["--env-id", "CartPole-v1"], "not a MuJoCo"),
        (["--env-id", "HalfCheetah-v3"], "HalfCheetah-v3"),
        (["--network-size", "huge"], "--network-size"),
        (["--buffer-size", "100000000000"], "--buffer-size"),
        (["--tau", "0"], "--tau"),
        (["--tau", "1.5"], "--tau"),
        (["--gamma", "1.5"], "--gamma"),
        (["--eval-frequency", "0"], "--eval-frequency"),
        (["--ent-coef", "0"], "--ent-coef"),
    ],
    "polyprune_cql_atari_jax": [
        (["--final-sparsity", "1.0"], "--final-sparsity"),
        (["--pruning-start", "0.9", "--pruning-end", "0.5"], "--pruning-start"),
        (["--cql-alpha", "-1"], "--cql-alpha"),
        (["--epochs", "0"], "--epochs"),
        (["--steps-per-epoch", "0"], "--steps-per-epoch"),
        (["--checkpoints-per-epoch", "0"], "--checkpoints-per-epoch"),
        (["--transitions-per-checkpoint", "4"], "--transitions-per-checkpoint"),
        (["--transitions-per-checkpoint", "100000000000"], "--transitions-per-checkpoint"),
        (["--target-update-period", "0"], "--target-update-period"),
        (["--env-id", "ALE/NoSuchGame-v5"], "ALE/NoSuchGame-v5"),
        (["--network-size", "huge"], "--network-size"),
        (["--gamma", "1.5"], "--gamma"),
        (["--batch-size", "0"], "--batch-size"),
    ],
    "eaudecql_atari_jax": [
        (["--population-size", "0"], "--population-size"),
        (["--population-size", "2"], "--tournament-size"),
        (["--alpha", "-1"], "--alpha"),
        (["--beta", "-0.1"], "--beta"),
        (["--cql-alpha", "-1"], "--cql-alpha"),
        (["--epochs", "0"], "--epochs"),
        (["--transitions-per-checkpoint", "4"], "--transitions-per-checkpoint"),
        (["--target-update-period", "0"], "--target-update-period"),
        (["--env-id", "ALE/NoSuchGame-v5"], "ALE/NoSuchGame-v5"),
        (["--network-size", "huge"], "--network-size"),
    ],
    "eaudesac_mujoco_jax": [
        (["--population-size", "0"], "--population-size"),
        (["--population-size", "2"], "--tournament-size"),
        (["--tournament-size", "0"], "--tournament-size"),
        (["--alpha", "-1"], "--alpha"),
        (["--beta", "1.5"], "--beta"),
        (["--beta", "-0.1"], "--beta"),
        (["--selection-period", "0"], "--selection-period"),
        (["--batch-size", "64", "--buffer-size", "32"], "--buffer-size"),
        (["--learning-starts", "2000", "--total-timesteps", "1000"], "--learning-starts"),
        (["--env-id", "NoSuchRobot-v4"], "NoSuchRobot-v4"),
        (["--env-id", "CartPole-v1"], "not a MuJoCo"),
        (["--network-size", "huge"], "--network-size"),
        (["--tau", "0"], "--tau"),
        (["--ent-coef", "0"], "--ent-coef"),
    ],
}


# Every script refuses a negative seed (numpy's seeding would raise later); the SAC scripts name the Atari scripts when
# given an Atari id
for _script, _cases in BAD_FLAGS.items():
    _cases.append((["--seed", "-1"], "--seed"))
    if SCRIPTS[_script]["family"] == "mujoco":
        _cases.append((["--env-id", "ALE/Pong-v5"], "eaudedqn_atari_jax.py"))


def scripts_where(**conditions):
    return [name for name, info in SCRIPTS.items() if all(info.get(k) == v for k, v in conditions.items())]


def scripts_with(attr):
    return [name for name in SCRIPTS if hasattr(importlib.import_module(name), attr)]


@pytest.fixture(params=list(SCRIPTS), scope="module")
def mod(request):
    return importlib.import_module(request.param)


@pytest.fixture(params=scripts_where(family="atari"), scope="module")
def atari_mod(request):
    return importlib.import_module(request.param)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """smoke(script): the script's SMOKE run (in a subprocess, run folder runs/smoke, no periodic checkpoint), made
    once per session and shared: test_smoke checks what it logged and saved, test_checkpoint compares a stopped and
    resumed run against it. Returns (cmd: the command without --run-name, cwd, out: the CompletedProcess, run_dir)."""
    cache, root = {}, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def get(script):
        if script not in cache:
            cwd = tmp_path_factory.mktemp(f"smoke-{script}")
            setup = SMOKE[script].get("setup")
            cmd = [sys.executable, os.path.join(root, f"{script}.py"), *SMOKE[script]["argv"], *(setup(cwd) if setup else [])]
            env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled")
            out = subprocess.run([*cmd, "--run-name", "smoke", "--checkpoint-frequency", "0"], cwd=cwd, env=env,
                                 capture_output=True, text=True, timeout=280)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            cache[script] = SimpleNamespace(cmd=cmd, cwd=cwd, out=out, run_dir=str(cwd / "runs" / "smoke"))
        return cache[script]

    return get
