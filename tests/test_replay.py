"""Atari frame-ring replay buffer: stacks rebuilt at sample time equal a naive reference (FrameStackObservation
with zero padding) across episode ends and ring wrap-around; exactly the valid transitions can be sampled."""
import numpy as np
import pytest


def naive_stack(frames, i):
    """Stack of frames[i-3..i], zeros before the episode start (as FrameStackObservation(padding_type="zero"))."""
    return np.stack([frames[j] if j >= 0 else np.zeros_like(frames[0]) for j in range(i - 3, i + 1)])


class Mirror:
    """Feeds a buffer and keeps, for every row ever written, what a naive implementation says it should serve."""

    def __init__(self, rb):
        self.rb, self.rows, self.episode_first = rb, [], 0

    def add(self, obs, action, reward, terminated, truncated, next_obs):
        if not self.rows or self.rows[-1] is None:
            self.episode_first = len(self.rows)
        self.rb.add(obs[-1], action, reward, terminated, truncated, next_obs[-1])
        self.rows.append((self.episode_first, (obs, action, np.float32(reward), float(terminated), next_obs)))
        if terminated or truncated:
            self.rows.append(None)

    def expected_valid(self):
        total, size = len(self.rows), self.rb.size
        oldest = total - size
        valid = []
        for g in range(oldest, total):
            row = self.rows[g]
            ok = row is not None and g + 1 < total and max(row[0], g - 3) >= oldest
            valid.append(ok)
        return np.array(valid)

    def check(self):
        size = self.rb.size
        assert size == min(len(self.rows), self.rb.capacity)
        expected = self.expected_valid()
        logical = np.arange(size)
        np.testing.assert_array_equal(self.rb.valid(logical), expected)
        idx = logical[expected]
        if idx.size == 0:
            return
        obs, actions, rewards, dones, next_obs = self.rb.transitions(idx)
        oldest = len(self.rows) - size
        for b, l in enumerate(idx):
            e_obs, e_a, e_r, e_d, e_next = self.rows[oldest + l][1]
            np.testing.assert_array_equal(obs[b], e_obs)
            np.testing.assert_array_equal(next_obs[b], e_next)
            assert (actions[b], rewards[b], dones[b]) == (e_a, e_r, e_d)


def synthetic_steps(rng, episodes, shape, max_length):
    """Episodes of distinct constant frames, ending at random by a terminal or a truncation: yields add() arguments."""
    counter = 0
    for _ in range(episodes):
        length = int(rng.integers(1, max_length))
        ends_terminal = bool(rng.integers(0, 2))
        frames = [np.full(shape, (counter + t) % 250 + 1, np.uint8) for t in range(length + 1)]
        counter += length + 1
        for i in range(length):
            last = i == length - 1
            yield (naive_stack(frames, i), int(rng.integers(0, 6)), float(rng.uniform(-1, 1)),
                   last and ends_terminal, last and not ends_terminal, naive_stack(frames, i + 1))


def test_synthetic_episodes_match_naive_stacks(atari_mod):
    rb = atari_mod.ReplayBuffer(37, frame_shape=(3, 3), seed=0)
    mirror = Mirror(rb)
    for step in synthetic_steps(np.random.default_rng(0), 60, (3, 3), 12):
        mirror.add(*step)
        mirror.check()
    assert len(mirror.rows) > 5 * rb.capacity, "the ring must have wrapped several times"


def test_real_env_stacks_match_frame_stack_wrapper(atari_mod):
    env = atari_mod.make_env("ALE/Pong-v5", 0, 0, False, "test", max_episode_steps=25)()
    rb = atari_mod.ReplayBuffer(40, seed=0)
    mirror = Mirror(rb)
    obs, _ = env.reset(seed=0)
    ends = 0
    for step in range(130):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, info = env.step(action)
        mirror.add(obs, action, np.clip(reward, -1, 1), terminated, truncated, next_obs)
        if terminated or truncated:
            ends += 1
            assert "episode" in info
            next_obs, _ = env.reset()
        obs = next_obs
        if step % 7 == 0 or terminated or truncated:
            mirror.check()
    mirror.check()
    env.close()
    assert ends >= 4 and len(mirror.rows) > rb.capacity


def test_sample_returns_only_valid_transitions(atari_mod):
    rb = atari_mod.ReplayBuffer(23, frame_shape=(2, 2), seed=3)
    mirror = Mirror(rb)
    for step in synthetic_steps(np.random.default_rng(1), 12, (2, 2), 6):
        mirror.add(*step)
    oldest = len(mirror.rows) - rb.size
    allowed = {
        (mirror.rows[oldest + l][1][0].tobytes(), mirror.rows[oldest + l][1][4].tobytes())
        for l in np.flatnonzero(mirror.expected_valid())
    }
    obs, actions, rewards, dones, next_obs = rb.sample(512)
    assert obs.shape == (512, 4, 2, 2) and obs.dtype == np.uint8 and dones.dtype == np.float32
    seen = {(o.tobytes(), n.tobytes()) for o, n in zip(obs, next_obs)}
    assert seen <= allowed
    assert len(seen) == len(allowed), "every valid transition should be reachable"


def test_memory_refusal_uses_the_arrays_real_size(atari_mod, monkeypatch):
    """check_memory refuses a buffer exactly when its arrays would take more than 90% of the available memory: the
    per-row cost it assumes must be what a row of the ring really takes."""
    rb = atari_mod.ReplayBuffer(1_000)
    needed = 10**6 * rb.nbytes() / rb.capacity
    monkeypatch.setattr(atari_mod, "available_memory_bytes", lambda: needed / 0.9 * 1.0001)
    atari_mod.ReplayBuffer.check_memory(10**6)
    monkeypatch.setattr(atari_mod, "available_memory_bytes", lambda: needed / 0.9 * 0.9999)
    with pytest.raises(atari_mod.ArgError, match="--buffer-size 1000000 needs"):
        atari_mod.ReplayBuffer.check_memory(10**6)


def test_empty_buffer_cannot_sample(atari_mod):
    rb = atari_mod.ReplayBuffer(10, frame_shape=(2, 2))
    rb.add(np.zeros((2, 2), np.uint8), 0, 0.0, False, False, np.zeros((2, 2), np.uint8))
    with pytest.raises(RuntimeError, match="no valid transition"):
        rb.sample(4)
