"""tools/cost.py: FLOPs of known small networks against hand counts, nonzero counts against the saved masks, and the
measured update of the scripts' own make_update."""
import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro

import eaudedqn_atari_jax as eaudedqn
import polyprune_dqn_atari_jax as dqn
import polyprune_sac_mujoco_jax as sac
from tools import cost


def random_params(init, *inputs, seed=0):
    """Params shaped as init would make them, drawn with numpy (no compilation: only shapes and zeros matter here)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init, jax.random.key(0), *inputs)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def random_mask(params, density, seed=0):
    """A 0/1 mask shaped like params: kernels keep about `density` of their weights at random, biases all kept."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.random(x.shape) < density if x.ndim > 1 else np.ones(x.shape, bool), params)


def test_mlp_flops_equal_a_hand_count():
    """SAC critic pair, hidden (8, 8), Hopper (11 + 3 inputs): one forward of both critics is
    2 critics x (14x8 + 8x8 + 8x1) multiply-adds, 2 FLOPs each; at a sparsity, 2 FLOPs per kept kernel weight."""
    critic = sac.VectorCritic(hidden=(8, 8))
    inputs = (jnp.zeros((1, 11)), jnp.zeros((1, 3)))
    params = random_params(critic.init, *inputs)
    positions = cost.layer_applications(critic, params, *inputs)
    assert len(positions) == 3 and set(positions.values()) == {1}
    hand = 2 * 2 * (14 * 8 + 8 * 8 + 8 * 1)
    assert cost.forward_flops(params, positions) == (hand, hand)  # stacked layout, dense weights
    split = sac.split_ensemble(params)  # the saved layout: one tree per critic
    assert cost.forward_flops(split, positions) == (hand, hand)
    assert cost.forward_flops(jax.eval_shape(critic.init, jax.random.key(0), *inputs), positions) == (hand, hand)
    mask = random_mask(split, 0.3)
    kept = sum(int(np.sum(m)) for m in jax.tree.leaves(mask) if m.ndim > 1)
    assert 0 < kept < hand // 2
    assert cost.forward_flops(mask, positions) == (hand, 2 * kept)


def test_cnn_flops_equal_a_hand_count():
    """Nature CNN with SAME padding on 84x84: convolutions output 21x21x32, 11x11x64, 11x11x64 (7,744 features);
    each kernel weight is applied once per output position."""
    net = dqn.QNetwork(action_dim=6, hidden=32)
    x = jnp.zeros((1, 4, 84, 84), jnp.uint8)
    params = jax.eval_shape(net.init, jax.random.key(0), x)  # shapes are enough for the dense count
    positions = cost.layer_applications(net, params, x)
    assert sorted(positions.values()) == [1, 1, 11 * 11, 11 * 11, 21 * 21]
    hand = 2 * (21 * 21 * (8 * 8 * 4 * 32) + 11 * 11 * (4 * 4 * 32 * 64) + 11 * 11 * (3 * 3 * 64 * 64) + 7744 * 32 + 32 * 6)
    assert cost.forward_flops(params, positions)[0] == hand == 24_572_288


def save_run(root, mod, argv, params, mask, extra=None):
    args = tyro.cli(mod.Args, args=argv)
    run_dir = root / f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__1"
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text(json.dumps(vars(args)))
    with open(run_dir / f"{args.exp_name}.cleanrl_model", "wb") as f:
        f.write(flax.serialization.to_bytes({"params": params, "masks": mask, **(extra or {})}))
    return args


def test_nonzero_count_equals_the_saved_masks(tmp_path):
    """Saved models in the scripts' layouts (SAC: a list of per-critic trees and the actor; DQN: the Q-network): the
    tool's nonzero count and sparsity are the masks' (mask_stats), its sparse FLOPs 2 x positions x kept weights."""
    runs = tmp_path / "runs"
    critic, actor = sac.VectorCritic(hidden=(8, 8)), sac.Actor(action_dim=3)
    critics = sac.split_ensemble(random_params(critic.init, jnp.zeros((1, 11)), jnp.zeros((1, 3)), seed=1))
    sac_mask = random_mask(critics, 0.4, seed=1)
    save_run(runs, sac, ["--env-id", "Hopper-v4", "--network-size", "8", "--batch-size", "8"],
             jax.tree.map(lambda p, m: np.where(m, p, 0), critics, sac_mask), sac_mask,
             {"actor_params": random_params(actor.init, jnp.zeros((1, 11)), seed=2)})
    net = dqn.QNetwork(action_dim=6, hidden=32)
    q = random_params(net.init, jnp.zeros((1, 4, 84, 84), jnp.uint8), seed=3)
    q_mask = random_mask(q, 0.1, seed=2)
    save_run(runs, dqn, ["--network-size", "small"], jax.tree.map(lambda p, m: np.where(m, p, 0), q, q_mask), q_mask)
    (runs / "no_model").mkdir()
    (runs / "no_model" / "args.json").write_text(json.dumps({"exp_name": "polyprune_dqn_atari_jax", "train_frequency": 4}))

    messages = []
    groups = cost.saved_models([str(runs)], messages.append)
    assert len(groups) == 2 and len(messages) == 1 and "no saved model" in messages[0]
    rows = {}
    for (_, script, env_id, size, k, batch), (args, models) in groups.items():
        rows[script] = cost.cost_row(cost.make_setup(script, env_id, size, k, batch, args), models, measure=False)
    for script, mask, kernels_positions in (("polyprune_sac_mujoco_jax", sac_mask, None),
                                            ("polyprune_dqn_atari_jax", q_mask, (21 * 21, 11 * 11, 11 * 11, 1, 1))):
        row = rows[script]
        sparsity, nonzero = sac.mask_stats(mask)
        assert row["nonzero"] == nonzero == sum(int(np.sum(m)) for m in jax.tree.leaves(mask))
        assert row["sparsity"] == pytest.approx(sparsity)
        assert row["params"] == sum(m.size for m in jax.tree.leaves(mask))
        assert row["models"] == 1
    kept = [int(np.sum(m)) for m in jax.tree.leaves(sac_mask) if m.ndim > 1]
    assert rows["polyprune_sac_mujoco_jax"]["fwd_sparse"] == 2 * sum(kept)
    # the DQN Q-network kernels in flax's sorted order: Conv_0, Conv_1, Conv_2, Dense_0, Dense_1
    q_kept = [int(np.sum(q_mask["params"][name]["kernel"])) for name in ("Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1")]
    assert rows["polyprune_dqn_atari_jax"]["fwd_sparse"] == 2 * sum(n * p for n, p in zip(q_kept, kernels_positions))
    assert rows["polyprune_dqn_atari_jax"]["action"] == rows["polyprune_dqn_atari_jax"]["fwd_sparse"]
    # one update of PolyPruneDQN: target forward + 3 forwards per sample, 32 samples
    assert rows["polyprune_dqn_atari_jax"]["update_sparse"] == 32 * 4 * rows["polyprune_dqn_atari_jax"]["fwd_sparse"]
    table = cost.markdown(list(rows.values()))
    assert "| polyprune_sac_mujoco_jax | Hopper-v4 | 8 | 1 | 8 | 1 |" in table


def test_cli_skips_a_corrupt_model_with_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    critic = sac.VectorCritic(hidden=(8, 8))
    critics = sac.split_ensemble(random_params(critic.init, jnp.zeros((1, 11)), jnp.zeros((1, 3))))
    mask = random_mask(critics, 0.5)
    save_run(runs, sac, ["--env-id", "Hopper-v4", "--network-size", "8", "--seed", "1"], critics, mask)
    args = save_run(runs, sac, ["--env-id", "Hopper-v4", "--network-size", "16", "--seed", "2"], critics, mask)
    bad = next(runs.glob(f"*__{args.exp_name}__2__1")) / f"{args.exp_name}.cleanrl_model"
    bad.write_bytes(b"not msgpack")
    assert cost.main([str(runs), "--no-time"]) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("skipped")]) == 1
    assert f"| {args.exp_name} | Hopper-v4 | 8 | 1 | 256 | 1 | 402 | {sac.mask_stats(mask)[1]} |" in out


@pytest.mark.parametrize("script", ["eaudesac_mujoco_jax", "eaudedqn_atari_jax"])  # both families, population adapters
def test_measured_update_of_the_scripts(script):
    """The script's own jitted update runs on random inputs: a time and XLA's peak memory come back, and more members
    cost more FLOPs."""
    env_id, size, batch = ("Hopper-v4", "8", 8) if "sac" in script else ("ALE/Pong-v5", "small", 2)
    setup = cost.make_setup(script, env_id, size, 2, batch)
    row = cost.cost_row(setup, repeats=1)
    assert row["time_ms"] > 0 and row["memory_mb"] > 0
    assert row["K"] == 2 and row["nonzero"] is None and row["update_sparse"] is None  # no model, no --sparsity
    if script == "eaudedqn_atari_jax":  # target forward + 2 members x (forward + backward), per sample
        assert row["update_dense"] == batch * (1 + 3 * 2) * row["fwd_dense"]
        assert eaudedqn.hidden_width("small") == 32 and row["params"] == 326_022
    else:  # next actions, dense target, 2 members x 3, actor forward + backward, critic k* forward + input gradient
        f, f_actor = row["fwd_dense"], row["action"]
        assert row["update_dense"] == batch * (f_actor + f + 3 * 2 * f + 3 * f_actor + 2 * f)


def test_help_states_the_conventions(capsys):
    with pytest.raises(SystemExit) as e:
        cost.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "multiply-add is 2 FLOPs" in out and "memory analysis" in out
