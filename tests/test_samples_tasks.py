"""The sample tasks produce the documented data and models."""

from __future__ import annotations

import torch

from probes.tasks import (
    LAST_LAYER_NORM,
    MARGIN,
    N_FEATURES,
    TickMLP,
    keep_on_unit_sphere,
    make_digits_data,
    make_tick_data,
    tick,
)
from probes.tasks.training import ground_truth_regime, stayed_at_chance

torch.set_num_threads(1)


def test_tick_data_shapes_and_feature_zero_separates_with_margin() -> None:
    data = make_tick_data(seed=0)
    assert data.x_train.shape == (512, 2 * N_FEATURES) and data.x_test.shape == (2000, 2 * N_FEATURES)
    assert set(data.y_train.unique().tolist()) == {0.0, 1.0}
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        t, v = x[:, 0], x[:, 1]
        signed = (v - tick(t)) * (2 * y - 1)  # feature 0: label 1 above the tick, 0 below
        assert signed.min() >= MARGIN - 1e-6
    # the noisier features disagree with the label on some points
    t, v = data.x_train[:, 30], data.x_train[:, 31]
    assert ((v - tick(t)) * (2 * data.y_train - 1) < 0).any()


def test_authors_geometry_every_feature_separates_with_margin_and_none_linearly() -> None:
    data = make_tick_data(seed=0, geometry="authors")
    assert data.x_train.shape == (512, 2 * N_FEATURES) and data.x_test.shape == (2000, 2 * N_FEATURES)
    assert 0.4 < float(data.y_test.mean()) < 0.6
    m = MARGIN * 2**0.5
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert float(x.abs().max()) <= 2.0
        for k in range(N_FEATURES):
            t, v = x[:, 2 * k], x[:, 2 * k + 1]
            band = (v >= t.abs() - 2 + m) & (v <= t.abs() - m)  # label 0: inside the V-shaped band
            outside = (v >= t.abs() + m) | (v <= t.abs() - 2 - m)  # label 1: above or below it
            assert bool(band[y == 0].all()) and bool(outside[y == 1].all())
            assert bool((v[y == 1] > t[y == 1].abs()).any()) and bool((v[y == 1] < t[y == 1].abs() - 2).any())
    # the features are independent draws given the label, not copies
    assert not torch.equal(data.x_train[:, 0:2], data.x_train[:, 2:4])
    assert not torch.equal(make_tick_data(seed=0).x_train, data.x_train)


def test_a_sweep_run_on_the_authors_geometry_records_it(tmp_path) -> None:
    from lrtui.runlog import load_run
    from probes.tasks.training import train_ticks

    for geometry in ("ours", "authors"):
        train_ticks(tmp_path / geometry, 0.01, pretrain_steps=40, finetune_steps=10, average_last=20,
                    average_every=10, log_every=20, geometry=geometry)
    runs = {g: load_run(tmp_path / g) for g in ("ours", "authors")}
    assert {g: r.meta["extra"]["geometry"] for g, r in runs.items()} == {"ours": "ours", "authors": "authors"}
    # the full-train loss is measured on each run's own data: the first evaluations differ
    first = {g: next(m["full_train_loss"] for m in r.records("metric") if "full_train_loss" in m) for g, r in runs.items()}
    assert first["ours"] != first["authors"]


def test_tick_mlp_fixed_head_and_unit_sphere_after_a_step() -> None:
    model = TickMLP(seed=0)
    assert torch.isclose(model.head.weight.norm(), torch.tensor(LAST_LAYER_NORM))
    assert not model.head.weight.requires_grad
    params = model.trained_parameters()
    opt = torch.optim.SGD(params, lr=0.5)
    keep_on_unit_sphere(opt, params)
    data = make_tick_data(seed=0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(data.x_train[:16]), data.y_train[:16])
    loss.backward()
    opt.step()
    total = torch.sqrt(sum((p * p).sum() for p in params))
    assert torch.isclose(total, torch.tensor(1.0), atol=1e-5)
    # scale-invariant up to LayerNorm's eps: scaling the trained weights barely moves the output
    before = model(data.x_test[:8])
    with torch.no_grad():
        for p in params:
            p.mul_(3.0)
    assert torch.allclose(model(data.x_test[:8]), before, rtol=2e-2, atol=2e-2)


def test_digits_split() -> None:
    data = make_digits_data(seed=0)
    assert data.x_train.shape == (1200, 1, 8, 8) and len(data.y_test) == 597
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0


def test_ground_truth_regime_chance_is_every_evaluation_of_the_last_quarter() -> None:
    at_chance = [0.9, 0.95] + [0.52, 0.48] * 3 + [0.5, 0.54]  # learned early, at chance for the last quarter
    assert stayed_at_chance(at_chance)
    # leaving chance once in the last quarter is learning, even when the mean stays under 0.6
    left = at_chance[:-1] + [0.66]
    assert sum(left[-2:]) / 2 < 0.6 and not stayed_at_chance(left)
    assert stayed_at_chance([0.55]) and not stayed_at_chance([])
    assert ground_truth_regime(0.5, at_chance) == "random_walk"
    assert ground_truth_regime(0.5, left) == "chaotic_equilibrium"
    assert ground_truth_regime(5e-3, at_chance) == "converged"
    assert ground_truth_regime(float("nan"), left) == "diverged"
