"""RL policy export and observation builder: the exported graphs (ONNX Runtime, TorchScript) give the RLModule's own
deterministic actions and the environment's own target weights; the builder's observation is the env's, bar by bar.

The policy is a freshly built (untrained) RLlib PPO RLModule saved to disk: equality does not need a good policy,
and building one takes no Ray cluster. One test exports a real `Algorithm.save_to_path` checkpoint (Ray, slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tradesys.config import DataConfig, RiskConfig
from tradesys.data import make_source
from tradesys.rl.env import PortfolioEnv, RLEnvConfig
from tradesys.rl.market import compute_features, market_from_source
from tradesys.rl.observation import ObservationBuilder
from tradesys.rl.policy import META_FILE, export_policy, load_policy

DATA = DataConfig(source="synthetic", synthetic_days=2, seed=11)
RISK = RiskConfig(max_gross_leverage=0.9, max_net_leverage=0.6)  # binds: the mapping's leverage scaling runs


def build_module(env: PortfolioEnv, path: Path, seed: int = 0) -> Path:
    """An untrained PPO RLModule (RLlib's default MLP, tanh) for `env`'s spaces, saved at `path`."""
    import torch
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    torch.manual_seed(seed)
    spec = RLModuleSpec(module_class=DefaultPPOTorchRLModule, observation_space=env.observation_space,
                        action_space=env.action_space,
                        model_config=DefaultModelConfig(fcnet_hiddens=[32, 32], fcnet_activation="tanh"))
    module = spec.build()
    with torch.no_grad():  # larger output weights so actions reach the clip bounds and the leverage limits bind
        module.pi.net.mlp[0].weight.mul_(20.0)
    module.save_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def market():
    return market_from_source(DATA)


@pytest.fixture(scope="module", params=["softmax", "clip"])
def exported(request, market, tmp_path_factory):
    mode = request.param
    cfg = RLEnvConfig(window=6, episode_length=None, action_mode=mode, max_weight=0.4, risk=RISK)
    env = PortfolioEnv(cfg, market)
    d = tmp_path_factory.mktemp(f"policy-{mode}")
    ckpt = build_module(env, d / "module")
    meta = export_policy(ckpt, d / "export", env=cfg, symbols=market.symbols)
    return cfg, env, ckpt, d / "export", meta


def _observations(env: PortfolioEnv, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        rows.append(obs)
    return np.stack(rows)


def test_exports_give_the_rlmodule_forward_inference_actions(exported) -> None:
    """ONNX Runtime and TorchScript vs the RLModule's own forward_inference (the Gaussian's mean, unsquashed)."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    _cfg, env, ckpt, path, meta = exported
    assert meta.files.get("onnxruntime") == "policy.onnx", meta.files.get("onnx_error")
    x = _observations(env, 40)
    module = RLModule.from_checkpoint(ckpt)
    with torch.no_grad():
        logits = module.forward_inference({"obs": torch.as_tensor(x)})["action_dist_inputs"].numpy()
    mean = logits[:, : env.action_space.shape[0]]  # TorchDiagGaussian inputs: mean then log std
    ref = np.clip(mean, -1.0, 1.0)  # unsquash_action on the [-1, 1] box: identity, then the clip
    assert (np.abs(mean) > 1).any() and (np.abs(mean) < 1).any(), "no action reached the bounds: weak test"
    for backend in ("onnxruntime", "torch"):
        pol = load_policy(path, backend)
        assert pol.backend == backend
        np.testing.assert_allclose(pol.action(x), ref, atol=1e-5, rtol=0)
        # batch 1 and the batch agree row by row
        np.testing.assert_allclose(pol.action(x[3]), pol.action(x)[3:4], atol=1e-6, rtol=0)


def test_weights_are_what_the_env_applies_for_that_action(exported) -> None:
    """Stepping the env with the policy's action: the env's realised target weights equal `act` on that obs."""
    cfg, env, _, path, _ = exported
    for backend in ("onnxruntime", "torch"):
        pol = load_policy(path, backend)
        obs, _ = env.reset(seed=0)
        scaled = 0
        for _ in range(30):
            w = pol.act(obs)[0]
            obs_next, _, _term, _trunc, info = env.step(pol.action(obs)[0])
            np.testing.assert_allclose(w, info["target_weights"], rtol=0, atol=1e-12)
            scaled += np.abs(w).sum() == pytest.approx(0.98 * RISK.max_gross_leverage) or \
                abs(w.sum()) == pytest.approx(0.98 * RISK.max_net_leverage)
            obs = obs_next
        assert scaled > 0, "the leverage limits never bound: weak test"
        if cfg.action_mode == "softmax":
            assert (w >= 0).all() and w.sum() <= 1.0 + 1e-12


def test_a_checkpoint_whose_spaces_do_not_match_the_env_is_refused(exported, market, tmp_path) -> None:
    cfg, _, ckpt, _, _ = exported
    with pytest.raises(ValueError, match=r"^checkpoint: .*observations"):
        export_policy(ckpt, tmp_path / "x", env=RLEnvConfig(window=7, action_mode=cfg.action_mode),
                      symbols=market.symbols)
    with pytest.raises(ValueError, match=r"^symbols: "):
        export_policy(ckpt, tmp_path / "x", env=cfg, symbols=[])


def test_bad_observations_and_paths_name_the_field(exported, tmp_path) -> None:
    _, _, _, path, meta = exported
    pol = load_policy(path)
    with pytest.raises(ValueError, match=rf"^observations: shape \(2, 3\), expected \(n, {meta.obs_dim}\)"):
        pol.act(np.zeros((2, 3)))
    bad = np.zeros((2, meta.obs_dim))
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"^observations: row 1 has a NaN"):
        pol.act(bad)
    assert pol.act(np.zeros((0, meta.obs_dim))).shape == (0, meta.n_assets)
    with pytest.raises(ValueError, match=r"^path: .*not a policy export"):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match=r"^backend: "):
        load_policy(path, "tensorrt")  # type: ignore[arg-type]
    raw = json.loads((path / META_FILE).read_text())
    raw["format"] = "other/9"
    (tmp_path / META_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"^path: .*not a tradesys RL policy export"):
        load_policy(tmp_path)


def test_metadata_rebuilds_the_env_settings(exported) -> None:
    cfg, _, _, path, meta = exported
    assert json.loads((path / META_FILE).read_text())["obs_dim"] == meta.obs_dim
    back = load_policy(path).meta.env_config()
    assert back.window == cfg.window and back.action_mode == cfg.action_mode and back.risk == cfg.risk
    assert back.broker == cfg.broker and back.max_weight == cfg.max_weight and back.features == cfg.features


# ----------------------------------------------------------------------------------------------- observations


@pytest.mark.parametrize("window", [1, 6])
def test_builder_observation_equals_the_env_observation_every_bar(market, window: int) -> None:
    """Bar batches from the source fed one at a time, and the env's own book (qty, cash, equity): the builder's
    observation is the env's, bit for bit, at every bar of a whole-period episode (including the first)."""
    cfg = RLEnvConfig(window=window, episode_length=None, action_mode="clip", max_weight=0.3)
    env = PortfolioEnv(cfg, market)
    b = ObservationBuilder(market.symbols, market.feature_names, window)
    batches = iter(make_source(DATA).batches())
    rng = np.random.default_rng(5)
    obs, info = env.reset(seed=0)
    seen_nonzero = 0
    for _step in range(150):
        t = int(info["bar"])
        for bars in batches:  # up to and including bar t
            b.update(bars)
            if b.last_ts == int(market.ts[t]):
                break
        core = env.unwrapped._core
        got = b.observation(core.qty[0], float(core.cash[0]), float(core.equity[0]))
        assert got is not None and got.dtype == np.float32
        np.testing.assert_array_equal(got, obs)
        seen_nonzero += bool(core.qty[0].any())
        obs, _, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        info = {"bar": t + 1}
        assert not (term or trunc)
    assert seen_nonzero > 100


def test_a_bounded_history_gives_the_same_float32_observations(market) -> None:
    """`max_history` 600 of 780 bars (the recursive features' start weighs (25/27)^567, about 1e-19): the same
    float32 feature windows as the whole history at every bar, and the float64 features to 1e-12 relative."""
    full = ObservationBuilder(market.symbols, market.feature_names, 5, max_history=None)
    short = ObservationBuilder(market.symbols, market.feature_names, 5, max_history=600)
    compared = 0
    for i, bars in enumerate(make_source(DATA).batches()):
        full.update(bars)
        short.update(bars)
        if full.n <= 600 and i % 25:
            continue  # both read the same bars until then: sample them
        a, b = full.feature_window(), short.feature_window()
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)
            compared += full.n > 600
    assert compared > 100
    with pytest.raises(ValueError, match=r"^max_history: "):
        ObservationBuilder(market.symbols, market.feature_names, 5, max_history=20)


def test_a_bounded_history_drops_old_bars_and_reads_the_last_max_history(market) -> None:
    """Memory stays bounded (at most 2 x max_history bars kept); the features are always those of the last
    max_history bars, computed afresh (`compute_features` on exactly those bars)."""
    full = ObservationBuilder(market.symbols, market.feature_names, 5, max_history=None)
    short = ObservationBuilder(market.symbols, market.feature_names, 5, max_history=100)
    for i, bars in enumerate(make_source(DATA).batches()):
        full.update(bars)
        short.update(bars)
        assert short.n <= 200
        if i % 37 == 0 and full.n > 100:
            last = tuple(p[-100:] for p in full.prices())
            np.testing.assert_array_equal(short.feature_window(), compute_features(last, market.feature_names)[-5:])
            np.testing.assert_array_equal(short.ts[-1], full.ts[-1])
    assert full.n > 700 and short.n < 200


def test_builder_waits_for_the_warm_up_and_ignores_replayed_bars(market) -> None:
    b = ObservationBuilder(market.symbols, market.feature_names, 4)
    batches = list(make_source(DATA).batches())
    decisions = []
    for bars in batches[:80]:
        b.update(bars)
        b.update(bars)  # a retried step adds nothing
        decisions.append(b.observation({}, 1.0, 1.0) is not None)
    first = decisions.index(True)
    # the env's first decision bar: the market's first bar (after the feature warm-up) + window - 1
    assert int(batches[first].column("ts")[0].value) == int(market.ts[3])
    assert all(decisions[first:])
    assert b.n == len({int(x.column("ts")[0].value) for x in batches[:80]})


def test_builder_errors_name_the_field(market) -> None:
    with pytest.raises(ValueError, match=r"^feature_names: "):
        ObservationBuilder(market.symbols, ["store_feature"], 5)
    with pytest.raises(ValueError, match=r"^window: "):
        ObservationBuilder(market.symbols, market.feature_names, 0)
    with pytest.raises(ValueError, match=r"^symbols: "):
        ObservationBuilder(["A", "A"], market.feature_names, 5)
    b = ObservationBuilder(market.symbols, market.feature_names, 1)
    batches = list(make_source(DATA).batches())
    for bars in batches[:60]:
        b.update(bars)
    gap = batches[60].filter(np.array(batches[60].column("symbol").to_pylist()) != market.symbols[2])
    with pytest.raises(ValueError, match=rf"^data: symbol '{market.symbols[2]}' has no usable bar"):
        b.update(gap)
    with pytest.raises(ValueError, match=r"^equity: "):
        b.observation({}, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------- a real checkpoint


@pytest.mark.ray
@pytest.mark.slow
def test_an_algorithm_checkpoint_exports(ray_session: None, market, tmp_path: Path) -> None:
    """`Algorithm.save_to_path` after one tiny PPO iteration: the export equals `train.RLPolicy` on it."""
    from tradesys.rl.train import PPOSettings, RLPolicy, build_ppo_config, env_config_dict

    cfg = RLEnvConfig(window=4, episode_length=30)
    s = PPOSettings(iterations=1, num_env_runners=0, train_batch_size=64, minibatch_size=32, num_epochs=1,
                    hidden=(16,))
    algo = build_ppo_config(env_config_dict(cfg, market), s).build_algo()
    try:
        algo.train()
        ckpt = algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    export_policy(ckpt, tmp_path / "export", env=cfg, symbols=market.symbols)
    x = _observations(PortfolioEnv(cfg, market), 20)
    ref = RLPolicy.from_checkpoint(ckpt)(x)
    for backend in ("onnxruntime", "torch"):
        np.testing.assert_allclose(load_policy(tmp_path / "export", backend).action(x), ref, atol=1e-5, rtol=0)
