"""Per-method glue so that one invariant test drives every script's own update function.

A trainer exposes: init(key) -> state; members(state) -> list of (params, mask) (one per population member);
prune(state, sparsity) -> state (magnitude-prunes every member to `sparsity`); step(state, key) -> state (one
gradient step of the script's jitted update on a random batch).
A population trainer (EauDe kinds) also exposes: batch(key); update_members(state, pop, batch, cum) -> (params, cum,
losses) (one population update of any number of members against the shared target); after_selection(state, pop,
k_star) -> state; and the class attributes population_steps (the ways it can run its members) and draws_members
(whether acting draws a member by loss).
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


class EauDeDQNTrainer:
    """A population of K members stacked on a leading axis, updated by the script's one vmapped step."""

    def __init__(self, mod, learning_rate=1e-3, population_size=2, population_step="auto"):
        self.mod, self.k = mod, population_size
        self.args = tyro.cli(mod.Args, args=["--batch-size", "4", "--network-size", "small", "--population-step", population_step,
                                             "--population-size", str(population_size), "--tournament-size", "2"])
        self.net = mod.QNetwork(action_dim=N_ACTIONS, hidden=32)
        self.optimizer = optax.adam(learning_rate, eps=self.args.adam_eps)
        self.update = mod.make_update(self.args, self.net, self.optimizer)

    def init(self, key):
        keys = jax.random.split(key, self.k)
        params = jax.vmap(self.net.init, in_axes=(0, None))(keys, np.zeros((1, 4, 84, 84), np.uint8))
        pop = {"params": params, "masks": jax.vmap(self.mod.dense_mask)(params),
               "opt_state": jax.vmap(self.optimizer.init)(params)}
        return {"pop": pop, "target": self.mod.member(params, 0), "cum": jnp.zeros(self.k)}

    def members(self, state):
        return [(self.mod.member(state["pop"]["params"], k), self.mod.member(state["pop"]["masks"], k))
                for k in range(self.k)]

    def prune(self, state, sparsity):
        pop = dict(state["pop"])
        for k in range(self.k):
            mask = self.mod.make_mask(self.mod.member(pop["params"], k), sparsity, self.mod.member(pop["masks"], k))
            params = self.mod.apply_mask(self.mod.member(pop["params"], k), mask)
            pop["masks"] = jax.tree.map(lambda x, y: x.at[k].set(y), pop["masks"], mask)
            pop["params"] = jax.tree.map(lambda x, y: x.at[k].set(y), pop["params"], params)
        return dict(state, pop=pop)

    def step(self, state, key):
        pop = dict(state["pop"])
        # EauDeDQN returns (params, opt_state, cum, losses, q); EauDeCQL adds td_loss and cql_loss
        pop["params"], pop["opt_state"], cum, *_ = self.update(pop["params"], pop["opt_state"], pop["masks"],
                                                               state["target"], atari_batch(key), state["cum"])
        return dict(state, pop=pop, cum=cum)

    # what the population tests may expect of this kind
    population_steps = ("vmap", "unrolled")  # --population-step: both ways of running the members give the same numbers
    draws_members = True  # each greedy action draws a member with probability proportional to 1 / (L_k + 1e-6)

    def batch(self, key):
        return atari_batch(key)

    def update_members(self, state, pop, batch, cum):
        """One population update of `pop` (any number of members) against the shared target: (params, cum, losses)."""
        params, _, cum, losses, *_ = self.update(pop["params"], pop["opt_state"], pop["masks"], state["target"], batch, cum)
        return params, cum, losses

    def after_selection(self, state, pop, k_star):
        """The state once a population update selected k*: member k* becomes the target, L resets."""
        return dict(state, pop=pop, target=self.mod.member(pop["params"], k_star), cum=jnp.zeros(self.k))


TRAINERS = {"polyprune_dqn": PolyPruneDQNTrainer, "eaudedqn": EauDeDQNTrainer}


SAC_OBS_DIM, SAC_ACTION_DIM = 5, 2


def mujoco_batch(key, batch_size=4):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    obs = np.asarray(jax.random.normal(k1, (batch_size, SAC_OBS_DIM)), dtype=np.float32)
    next_obs = np.asarray(jax.random.normal(k2, (batch_size, SAC_OBS_DIM)), dtype=np.float32)
    actions = np.asarray(jax.random.uniform(k3, (batch_size, SAC_ACTION_DIM), minval=-1, maxval=1), dtype=np.float32)
    rewards = np.asarray(jax.random.uniform(k4, (batch_size,), minval=-1, maxval=1), dtype=np.float32)
    dones = np.asarray(jax.random.bernoulli(k5, 0.2, (batch_size,)), dtype=np.float32)
    return obs, actions, rewards, dones, next_obs


class PolyPruneSACTrainer:
    """The member is the critic pair: (params, mask) as a list of the two critics' trees (one global threshold)."""

    def __init__(self, mod, learning_rate=1e-3):
        self.mod = mod
        self.args = tyro.cli(mod.Args, args=["--batch-size", "4"])
        self.actor = mod.Actor(action_dim=SAC_ACTION_DIM, hidden=(32, 32))
        self.critic = mod.VectorCritic(hidden=(32, 32))
        self.optimizer = optax.adam(learning_rate)  # a large rate moves weights visibly
        self.update = mod.make_update(self.args, self.actor, self.critic, self.optimizer)

    def init(self, key):
        return self.mod.init_state(key, self.actor, self.critic, self.optimizer, SAC_OBS_DIM, SAC_ACTION_DIM)

    def members(self, state):
        return [(self.mod.split_ensemble(state.critic_params), self.mod.split_ensemble(state.critic_mask))]

    def prune(self, state, sparsity):
        return self.mod.prune_critic(state, sparsity)

    def step(self, state, key):
        return self.update(state, mujoco_batch(jax.random.fold_in(key, 1)), key)[0]


TRAINERS["polyprune_sac"] = PolyPruneSACTrainer


class PolyPruneCQLTrainer(PolyPruneDQNTrainer):
    """The CQL update has the DQN signature and returns one more metric (the CQL term)."""

    def step(self, state, key):
        params, opt, _, _, _ = self.update(state["params"], state["opt"], state["mask"], state["target"], atari_batch(key))
        return dict(state, params=params, opt=opt)


TRAINERS["polyprune_cql"] = PolyPruneCQLTrainer
class EauDeCQLTrainer(EauDeDQNTrainer):
    """EauDeDQN's population interface and update signature (the update returns more metrics); offline: no acting."""

    draws_members = False


TRAINERS["eaudecql"] = EauDeCQLTrainer


class EauDeSACTrainer:
    """K critic pairs (each in the split layout, a list of the two critics' trees, stacked on a leading K axis) sharing
    one actor, temperature and Polyak target; k_star is the member the actor is trained on and the target moves toward.
    The population layout is EauDeDQN's, so members and prune are the same code."""

    population_steps = ("vmap",)  # one vmap over the members; EauDeSAC has no --population-step
    draws_members = False  # it acts with its one shared actor
    _built = {}  # (module, learning rate) -> (actor, critic, optimizer, update), shared so that compilations are reused

    def __init__(self, mod, learning_rate=1e-3, population_size=3, population_step="vmap"):
        self.mod, self.k = mod, population_size
        self.args = tyro.cli(mod.Args, args=["--batch-size", "4", "--population-size", str(population_size),
                                             "--tournament-size", "2"])
        if (mod.__name__, learning_rate) not in self._built:  # the update reads gamma, tau, autotune: the same for all
            actor, critic = mod.Actor(action_dim=SAC_ACTION_DIM, hidden=(32, 32)), mod.VectorCritic(hidden=(32, 32))
            optimizer = optax.adam(learning_rate)  # a large rate moves weights visibly
            self._built[mod.__name__, learning_rate] = (actor, critic, optimizer,
                                                        mod.make_update(self.args, actor, critic, optimizer))
        self.actor, self.critic, self.optimizer, self.update = self._built[mod.__name__, learning_rate]

    def init(self, key):
        # independent inits: the update tests need members that differ before any pruning (the script's default,
        # one shared init, is tested in test_eaudesac.py)
        shared, pop = self.mod.init_state(key, self.actor, self.critic, self.optimizer, SAC_OBS_DIM, SAC_ACTION_DIM, self.k,
                                          member_init="independent")
        return {"pop": pop, "shared": shared, "cum": jnp.zeros(self.k), "k_star": 0}

    members = EauDeDQNTrainer.members
    prune = EauDeDQNTrainer.prune

    def step(self, state, key):
        pop, shared, cum, _ = self.update(state["pop"], state["shared"], mujoco_batch(jax.random.fold_in(key, 1)), key,
                                          state["k_star"], state["cum"])
        return dict(state, pop=pop, shared=shared, cum=cum)

    def batch(self, key):
        return mujoco_batch(key)

    def update_members(self, state, pop, batch, cum):
        """One population update of `pop` (any number of members) with one fixed key, so every call draws the same
        next actions and so the same shared y: (params, cum, losses). The shared state is copied (the update donates it)."""
        shared = jax.tree.map(jnp.copy, state["shared"])
        pop, _, new_cum, _ = self.update(pop, shared, batch, jax.random.key(0), state["k_star"], cum)
        return pop["params"], new_cum, new_cum - cum

    def after_selection(self, state, pop, k_star):
        """The state once a population update selected k*: the actor's critic and the target's Polyak source, L resets."""
        return dict(state, pop=pop, k_star=k_star, cum=jnp.zeros(self.k))


TRAINERS["eaudesac"] = EauDeSACTrainer
