"""DQN Replay Dataset format, generator and streaming loader of the offline scripts: files exactly as Dopamine writes
them; stacks equal a naive reference and the online environment's own stacks; episode starts and invalid_range are
never sampled; only the kept rows are decompressed; bad data stops the run with one line naming the file."""
import gzip
import importlib
import io
import os
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
from conftest import scripts_where

from tools import make_dqn_replay_dataset as gen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ACTIONS = 6  # Pong's minimal action set


@pytest.fixture(params=scripts_where(family="atari_offline"), scope="module")
def offline_mod(request):
    return importlib.import_module(request.param)


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """A dataset played on Pong by a random policy, with the environment's own stacks recorded for every row."""
    out = tmp_path_factory.mktemp("played")
    args = gen.Args(out=str(out), num_checkpoints=2, rows_per_checkpoint=500, max_episode_steps=120, compresslevel=1)
    recorded = gen.generate(args, record_stacks=True, quiet=True)
    return str(out / "replay_logs"), recorded


def synthetic_checkpoint(rng, n, mean_episode=30, tag=0):
    """Episodes of random length, each after 3 all-zero rows; frame j (real rows) encodes j and `tag` in its first
    pixels, the rest random. Returns observation, action, reward, terminal (last episode may be unfinished)."""
    obs = np.zeros((n, 84, 84), np.uint8)
    action, reward, terminal = np.zeros(n, np.int32), np.zeros(n, np.float32), np.zeros(n, np.uint8)
    j = 0
    while j < n:
        j += 3  # padding rows
        length = int(rng.integers(1, 2 * mean_episode))
        for t in range(length):
            if j >= n:
                break
            obs[j] = rng.integers(0, 256, (84, 84), dtype=np.uint8)
            obs[j, 0, :4] = [j % 256, j // 256, tag, 1]
            action[j], reward[j] = rng.integers(0, N_ACTIONS), rng.choice([-1.0, 0.0, 1.0])
            terminal[j] = t == length - 1
            j += 1
    return obs, action, reward, terminal


def decode_row(frame):
    return int(frame[0, 0]) + 256 * int(frame[0, 1])


def read_gz_npy(path):
    with open(path, "rb") as f:
        return np.load(io.BytesIO(gzip.decompress(f.read())), allow_pickle=False)


def naive_valid(terminal, invalid, rows):
    return [j for j in range(rows) if j >= 3 and j + 1 < rows and not terminal[j - 3:j].any() and j not in set(invalid)]


# ---------------------------------------------------------------- generator: the exact on-disk format


def test_generated_files_have_the_exact_format(played):
    replay_dir, recorded = played
    n = 500
    expected = {f"$store$_{a}_ckpt.{i}.gz" for a in gen.ARRAY_NAMES for i in (0, 1)}
    expected |= {f"{a}_ckpt.{i}.gz" for a in ("add_count", "invalid_range") for i in (0, 1)}
    assert set(os.listdir(replay_dir)) == expected
    spec = {"observation": (np.uint8, (n, 84, 84)), "action": (np.int32, (n,)), "reward": (np.float32, (n,)),
            "terminal": (np.uint8, (n,)), "add_count": (np.int64, ()), "invalid_range": (np.int64, (5,))}
    for i, data in enumerate(recorded):
        for name, (dtype, shape) in spec.items():
            path = gen.checkpoint_path(replay_dir, name, i)
            raw = gzip.decompress(open(path, "rb").read())  # one gzip stream holding exactly np.save's bytes
            array = np.load(io.BytesIO(raw), allow_pickle=False)
            assert array.dtype == dtype and array.shape == shape, (name, array.dtype, array.shape)
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            assert raw == buf.getvalue()
            if name in gen.ARRAY_NAMES:
                np.testing.assert_array_equal(array, data[name])
        assert int(read_gz_npy(gen.checkpoint_path(replay_dir, "add_count", i))) == n - 1
        inv = read_gz_npy(gen.checkpoint_path(replay_dir, "invalid_range", i))
        assert inv.tolist() == [(n - 2 + k) % n for k in range(5)]  # c = add_count mod N = N - 1
        # row N - 1 is unwritten; rewards clipped; each episode starts with 3 all-zero rows (action 0, reward 0, terminal 0)
        last = n - 1
        assert not data["observation"][last].any() and data["action"][last] == 0 and data["terminal"][last] == 0
        assert np.abs(data["reward"]).max() <= 1.0
        starts = [0] + [j + 1 for j in np.flatnonzero(data["terminal"]) if j + 1 < n - 1]
        assert len(starts) >= 3, "the fixture should hold several episodes"
        for e in starts:
            pad = slice(e, min(e + 3, n - 1))
            assert not data["observation"][pad].any() and not data["action"][pad].any()
            assert not data["reward"][pad].any() and not data["terminal"][pad].any()
            assert all(s is None for s in data["stacks"][pad])
            if e + 3 < n - 1:
                assert data["stacks"][e + 3] is not None, "an episode's first real row follows its 3 padding rows"


def test_generator_acts_with_a_saved_model(tmp_path):
    import flax.serialization
    import jax

    online = gen.online
    q_network = online.QNetwork(action_dim=N_ACTIONS, hidden=16)
    shapes = jax.eval_shape(q_network.init, jax.random.key(0), np.zeros((1, 4, 84, 84), np.uint8))
    rng = np.random.default_rng(5)  # random weights without compiling the initialisers (seconds on this CPU)
    params = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes)
    mask = jax.tree.map(lambda p: rng.random(p.shape) < 0.5 if p.ndim > 1 else np.ones(p.shape, bool), params)
    model = tmp_path / "m.cleanrl_model"
    model.write_bytes(flax.serialization.to_bytes({"params": online.apply_mask(params, mask), "masks": mask}))
    args = gen.Args(out=str(tmp_path), num_checkpoints=1, rows_per_checkpoint=40, model=str(model), epsilon=0.0)
    (data,) = gen.generate(args, record_stacks=True, quiet=True)
    rows = [j for j, s in enumerate(data["stacks"]) if s is not None]
    obs = np.stack([data["stacks"][j][0] for j in rows])
    greedy = np.asarray(q_network.apply(online.apply_mask(params, mask), obs).argmax(-1))
    np.testing.assert_array_equal(data["action"][rows], greedy)


# ---------------------------------------------------------------- loader: stacks and validity


def test_loader_round_trips_the_generator_and_rebuilds_the_env_stacks(offline_mod, played):
    replay_dir, recorded = played
    for i, data in enumerate(recorded):
        ckpt = offline_mod.load_checkpoint(replay_dir, str(i), 10**9, num_actions=N_ACTIONS)
        rows = 500 - 1  # rows used = add_count: the unwritten last row is never read
        assert ckpt["rows"] == rows and ckpt["observation"].shape == (rows, 84, 84)
        for name in gen.ARRAY_NAMES:
            np.testing.assert_array_equal(ckpt[name], data[name][:rows].astype(ckpt[name].dtype))
        # every real row except the last written one starts a transition; padding rows never do
        expected = [j for j in range(rows) if data["stacks"][j] is not None and j + 1 < rows]
        assert ckpt["valid"].tolist() == expected
        obs, actions, rewards, dones, next_obs = offline_mod.stack_transitions(ckpt, ckpt["valid"])
        assert obs.shape == (len(expected), 4, 84, 84) and obs.dtype == np.uint8 and dones.dtype == np.float32
        for b, j in enumerate(expected):
            env_obs, env_next = data["stacks"][j]
            np.testing.assert_array_equal(obs[b], env_obs)  # = FrameStackObservation's zero-padded stack, oldest first
            if not data["terminal"][j]:
                np.testing.assert_array_equal(next_obs[b], env_next)
        np.testing.assert_array_equal(actions, data["action"][expected])
        np.testing.assert_array_equal(rewards, data["reward"][expected])
        np.testing.assert_array_equal(dones, data["terminal"][expected])


def test_stacks_match_a_naive_reference_with_the_cursor_inside_the_kept_rows(offline_mod, tmp_path):
    rng = np.random.default_rng(0)
    n, kept, add_count = 300, 250, 3 * 300 + 137  # a full ring whose cursor (137) lies inside the kept rows
    obs, action, reward, terminal = synthetic_checkpoint(rng, n, mean_episode=12)
    gen.write_checkpoint(str(tmp_path), 0, obs, action, reward, terminal, add_count=add_count, compresslevel=1)
    invalid = gen.invalid_range(add_count, n).tolist()
    assert invalid == [136, 137, 138, 139, 140]
    ckpt = offline_mod.load_checkpoint(str(tmp_path), "0", kept, num_actions=N_ACTIONS)
    expected = naive_valid(terminal, invalid, kept)
    assert ckpt["valid"].tolist() == expected
    o, a, r, d, o2 = offline_mod.stack_transitions(ckpt, np.array(expected))
    for b, j in enumerate(expected):
        np.testing.assert_array_equal(o[b], np.stack([obs[j - 3], obs[j - 2], obs[j - 1], obs[j]]))
        np.testing.assert_array_equal(o2[b], np.stack([obs[j - 2], obs[j - 1], obs[j], obs[j + 1]]))
        assert (a[b], r[b], d[b]) == (action[j], reward[j], terminal[j])

    # sampling through the buffer: only valid rows, never a padding row or invalid_range, and all of them reachable
    rb = offline_mod.FixedReplayBuffer(str(tmp_path), 5, kept, num_actions=N_ACTIONS, seed=1)
    rb.reload()
    newest = np.concatenate([rb.sample(64)[0][:, -1] for _ in range(150)])
    assert newest[:, 0, 3].all(), "a padding row (all zero) was sampled as a state's newest frame"
    seen = {decode_row(f) for f in newest}
    assert seen == set(expected)
    assert not seen & set(invalid) and min(seen) >= 3


def test_unfilled_buffer_uses_only_add_count_rows(offline_mod, tmp_path):
    rng = np.random.default_rng(1)
    obs, action, reward, terminal = synthetic_checkpoint(rng, 200)
    gen.write_checkpoint(str(tmp_path), 0, obs, action, reward, terminal, add_count=90, compresslevel=1)
    ckpt = offline_mod.load_checkpoint(str(tmp_path), "0", 150)
    assert ckpt["rows"] == 90 and ckpt["observation"].shape == (90, 84, 84)
    assert ckpt["valid"].tolist() == naive_valid(terminal, gen.invalid_range(90, 200), 90)


def test_a_batch_comes_from_one_checkpoint_and_reload_draws_distinct_ones(offline_mod, tmp_path):
    rng = np.random.default_rng(2)
    for i in range(6):
        gen.write_checkpoint(str(tmp_path), i, *synthetic_checkpoint(rng, 60, tag=i), compresslevel=1)
    rb = offline_mod.FixedReplayBuffer(str(tmp_path), 3, 50, num_actions=N_ACTIONS, seed=0)
    assert rb.suffixes == [str(i) for i in range(6)]
    draws = [tuple(rb.reload()) for _ in range(10)]
    assert all(len(set(d)) == 3 for d in draws) and len(set(draws)) > 1
    tags = set()
    for _ in range(40):
        batch_tags = set(rb.sample(8)[0][:, -1, 0, 2].tolist())
        assert len(batch_tags) == 1, "a batch mixes checkpoints"
        tags |= batch_tags
    assert tags == {int(s) for s in draws[-1]}
    # fewer checkpoints than asked: all of them, read once
    rb = offline_mod.FixedReplayBuffer(str(tmp_path), 10, 50, seed=0)
    assert rb.reload() == [str(i) for i in range(6)]
    first = rb.loaded
    rb.reload()
    assert rb.loaded is first


# ---------------------------------------------------------------- streaming


def partial_npy_gz(path, array, rows_present):
    """A gzip stream whose .npy header announces all of `array` but whose data stops after `rows_present` rows
    (sync-flushed, no end-of-stream marker): what a download cut short looks like."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    header = buf.getvalue()[: len(buf.getvalue()) - array.nbytes]
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    body = c.compress(header + array[:rows_present].tobytes()) + c.flush(zlib.Z_SYNC_FLUSH)
    with open(path, "wb") as f:
        f.write(body)


def test_streaming_reads_only_the_kept_rows(offline_mod, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    n, kept = 3000, 100
    obs, action, reward, terminal = synthetic_checkpoint(rng, n)
    gen.write_checkpoint(str(tmp_path), 0, obs, action, reward, terminal, add_count=5 * n, compresslevel=1)
    path = gen.checkpoint_path(str(tmp_path), "observation", 0)

    served = {"bytes": 0}
    real_open = gzip.open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, *a):
            data = self.f.read(*a)
            served["bytes"] += len(data)
            return data

        def readinto(self, b):
            k = self.f.readinto(b)
            served["bytes"] += k
            return k

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(gzip, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    tracemalloc.start()
    frames = offline_mod.read_npy_gz(path, kept)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(frames, obs[:kept])
    assert served["bytes"] <= 128 + kept * 84 * 84, "more than the header and the kept rows was read"
    assert peak < 3 * frames.nbytes, f"peak {peak} bytes for {frames.nbytes} kept (the whole array: {obs.nbytes})"
    monkeypatch.undo()

    # a stream holding only the kept rows (the rest never written) still loads: nothing past them is read
    partial_npy_gz(path, obs, kept)
    ckpt = offline_mod.load_checkpoint(str(tmp_path), "0", kept)
    np.testing.assert_array_equal(ckpt["observation"], obs[:kept])
    with pytest.raises(offline_mod.DatasetError, match="truncated"):
        offline_mod.load_checkpoint(str(tmp_path), "0", kept + 1)


# ---------------------------------------------------------------- bad data: one line naming the file


def small_dataset(folder, checkpoints=1, n=40):
    rng = np.random.default_rng(4)
    for i in range(checkpoints):
        gen.write_checkpoint(str(folder), i, *synthetic_checkpoint(rng, n), compresslevel=1)
    return str(folder)


def _missing_dir(d):
    return os.path.join(d, "nowhere"), "nowhere"


def _empty_dir(d):
    return d, d


def _no_complete_checkpoint(d):
    small_dataset(d)
    os.remove(gen.checkpoint_path(d, "terminal", 0))
    return d, "$store$_terminal_ckpt.0.gz"


def _missing_array_in_a_counted_checkpoint(d):
    small_dataset(d)  # 6 files again, but the terminal array is missing
    os.remove(gen.checkpoint_path(d, "terminal", 0))
    open(os.path.join(d, "episode_end_indices_ckpt.0.gz"), "wb").close()
    return d, "$store$_terminal_ckpt.0.gz"


def _shapes_disagree(d):
    small_dataset(d, checkpoints=2)
    gen.save_npy_gz(gen.checkpoint_path(d, "action", 1), np.zeros(39, np.int32))
    return d, "$store$_action_ckpt.1.gz"


def _frames_not_84x84(d):
    small_dataset(d)
    gen.save_npy_gz(gen.checkpoint_path(d, "observation", 0), np.zeros((40, 84, 80), np.uint8))
    return d, "$store$_observation_ckpt.0.gz"


def _float_actions(d):
    small_dataset(d)
    gen.save_npy_gz(gen.checkpoint_path(d, "action", 0), np.zeros(40, np.float32))
    return d, "$store$_action_ckpt.0.gz"


def _truncated_header(d):
    small_dataset(d)
    path = gen.checkpoint_path(d, "reward", 0)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:25])
    return d, "$store$_reward_ckpt.0.gz"


def _truncated_rows(d):
    small_dataset(d)
    obs = synthetic_checkpoint(np.random.default_rng(4), 40)[0]
    partial_npy_gz(gen.checkpoint_path(d, "observation", 0), obs, 20)
    return d, "$store$_observation_ckpt.0.gz"


def _not_gzip(d):
    small_dataset(d)
    np.save(open(gen.checkpoint_path(d, "terminal", 0), "wb"), np.zeros(40, np.uint8))
    return d, "$store$_terminal_ckpt.0.gz"


def _pickled(d):
    small_dataset(d)
    with gzip.open(gen.checkpoint_path(d, "invalid_range", 0), "wb") as f:
        np.save(f, np.array([{1}, {2}], dtype=object), allow_pickle=True)
    return d, "invalid_range_ckpt.0.gz"


def _action_outside_the_game(d):
    rng = np.random.default_rng(4)
    obs, action, reward, terminal = synthetic_checkpoint(rng, 40)
    action[10] = 17
    gen.write_checkpoint(d, 0, obs, action, reward, terminal)
    return d, "$store$_action_ckpt.0.gz"


BAD_DATA = [_missing_dir, _empty_dir, _no_complete_checkpoint, _missing_array_in_a_counted_checkpoint, _shapes_disagree,
            _frames_not_84x84, _float_actions, _truncated_header, _truncated_rows, _not_gzip, _pickled,
            _action_outside_the_game]


@pytest.mark.parametrize("make_bad", BAD_DATA, ids=lambda f: f.__name__.strip("_"))
def test_bad_data_gives_one_line_naming_the_file(offline_mod, tmp_path, make_bad):
    dataset_dir, needle = make_bad(str(tmp_path))
    with pytest.raises(offline_mod.DatasetError) as err:
        rb = offline_mod.FixedReplayBuffer(dataset_dir, 5, 1000, num_actions=N_ACTIONS)
        rb.reload()
    message = str(err.value)
    assert needle in message and "\n" not in message, message


def test_truncation_in_a_checkpoint_loaded_later_names_the_file(offline_mod, tmp_path):
    d = small_dataset(tmp_path, checkpoints=3)
    obs = synthetic_checkpoint(np.random.default_rng(9), 40)[0]
    partial_npy_gz(gen.checkpoint_path(d, "observation", 2), obs, 10)
    rb = offline_mod.FixedReplayBuffer(d, 1, 1000, num_actions=N_ACTIONS, seed=0)  # headers are intact: accepted
    assert rb.suffixes == ["0", "1", "2"]
    offline_mod.load_checkpoint(d, "2", 10)  # the rows present are fine
    with pytest.raises(offline_mod.DatasetError, match=r"\$store\$_observation_ckpt\.2\.gz: truncated"):
        for _ in range(20):
            rb.reload()


def test_incomplete_checkpoint_is_skipped_with_a_warning(offline_mod, tmp_path, capsys):
    d = small_dataset(tmp_path, checkpoints=2)
    os.remove(gen.checkpoint_path(d, "reward", 1))
    rb = offline_mod.FixedReplayBuffer(d, 5, 1000)
    assert rb.suffixes == ["0"]
    assert "$store$_reward_ckpt.1.gz" in capsys.readouterr().err


@pytest.mark.parametrize("script", scripts_where(family="atari_offline"))
def test_script_stops_on_bad_data_before_writing_anything(script, tmp_path):
    (tmp_path / "data").mkdir()
    dataset_dir, needle = _shapes_disagree(str(tmp_path / "data"))
    run = tmp_path / "run"
    run.mkdir()
    out = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), "--dataset-dir", dataset_dir],
                         cwd=run, capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 1, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert os.listdir(run) == [], "a refused run must not create anything"
