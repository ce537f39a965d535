"""Per-method glue so that one invariant test drives every script's own update function.

A trainer exposes: init(key) -> state; members(state) -> list of (params, mask) (one per population member);
prune(state, sparsity) -> state (magnitude-prunes every member to `sparsity`); step(state, key) -> state (one
gradient step of the script's jitted update on a random batch).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

N_ACTIONS = 6


def atari_batch(key, batch_size=4):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    obs = np.asarray(jax.random.randint(k1, (batch_size, 4, 84, 84), 0, 256), dtype=np.uint8)
    next_obs = np.asarray(jax.random.randint(k2, (batch_size, 4, 84, 84), 0, 256), dtype=np.uint8)
    actions = np.asarray(jax.random.randint(k3, (batch_size,), 0, N_ACTIONS), dtype=np.int32)
    rewards = np.asarray(jax.random.uniform(k4, (batch_size,), minval=-1, maxval=1), dtype=np.float32)
    dones = np.asarray(jax.random.bernoulli(k5, 0.2, (batch_size,)), dtype=np.float32)
    return obs, actions, rewards, dones, next_obs


class PolyPruneDQNTrainer:
    def __init__(self, mod, learning_rate=1e-3):
        self.mod = mod
        self.args = tyro.cli(mod.Args, args=["--batch-size", "4", "--network-size", "small"])
        self.net = mod.QNetwork(action_dim=N_ACTIONS, hidden=32)
        self.optimizer = optax.adam(learning_rate, eps=self.args.adam_eps)  # a large rate moves weights visibly
        self.update = mod.make_update(self.args, self.net, self.optimizer)

    def init(self, key):
        params = self.net.init(key, np.zeros((1, 4, 84, 84), np.uint8))
        return {"params": params, "opt": self.optimizer.init(params), "mask": self.mod.dense_mask(params),
                "target": jax.tree.map(jnp.copy, params)}

    def members(self, state):
        return [(state["params"], state["mask"])]

    def prune(self, state, sparsity):
        mask = self.mod.make_mask(state["params"], sparsity, state["mask"])
        return dict(state, mask=mask, params=self.mod.apply_mask(state["params"], mask))

    def step(self, state, key):
        params, opt, _, _ = self.update(state["params"], state["opt"], state["mask"], state["target"], atari_batch(key))
        return dict(state, params=params, opt=opt)


TRAINERS = {"polyprune_dqn": PolyPruneDQNTrainer}


class PolyPruneCQLTrainer(PolyPruneDQNTrainer):
    """The CQL update has the DQN signature and returns one more metric (the CQL term)."""

    def step(self, state, key):
        params, opt, _, _, _ = self.update(state["params"], state["opt"], state["mask"], state["target"], atari_batch(key))
        return dict(state, params=params, opt=opt)


TRAINERS["polyprune_cql"] = PolyPruneCQLTrainer
