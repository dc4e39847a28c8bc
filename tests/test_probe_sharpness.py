"""Sharpness, preconditioned sharpness, batch sharpness and activation sparsity against exact oracles;
and the promise that measuring them leaves the training run bitwise unchanged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch.func import functional_call

from probes import Probe

torch.set_num_threads(1)


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def _exact_hessian(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The full Hessian and gradient of the loss in the flattened parameters (the oracle)."""
    named = [(n, p) for n, p in model.named_parameters()]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for n, p in named:
            params[n] = flat[i : i + p.numel()].view_as(p)
            i += p.numel()
        return loss_fn(functional_call(model, params, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for _, p in named])
    hessian = torch.autograd.functional.hessian(loss_of, flat)
    flat_req = flat.clone().requires_grad_()
    gradient = torch.autograd.grad(loss_of(flat_req), flat_req)[0]
    return hessian, gradient


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).double()


def test_sharpness_matches_the_exact_hessian_for_sgd_and_adam(tmp_path: Path) -> None:
    criterion = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen)
    for name in ("sgd", "adam"):
        model = _tiny_model()
        if name == "sgd":
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        run = tmp_path / name
        exact: dict[int, dict[str, float]] = {}
        with Probe(model, optimizer, run, loss_fn=criterion, hessian_batch=(x, y), sharpness_budget=1.0, system_stats=False) as probe:
            for step in range(6):
                loss = criterion(model(x[:32]), y[:32])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss)
                hessian, g = _exact_hessian(model, criterion, x, y)
                eig = torch.linalg.eigvalsh(hessian)
                assert eig[-1] > -eig[0]  # the top eigenvalue is also the largest in magnitude
                record = {"hessian": float(eig[-1]), "batch": float(g @ hessian @ g / (g @ g))}
                if name == "adam":
                    beta2, eps = optimizer.param_groups[0]["betas"][1], optimizer.param_groups[0]["eps"]
                    p_diag = torch.cat(
                        [
                            (optimizer.state[p]["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** float(optimizer.state[p]["step"])) + eps).reshape(-1)
                            for p in model.parameters()
                        ]
                    )
                    # λ_max(P⁻¹H) built explicitly (not symmetric), the probe uses P^-1/2 H P^-1/2
                    record["preconditioned"] = float(torch.linalg.eigvals(hessian / p_diag[:, None]).real.max())
                exact[step] = record
        events = _events(run, "sharpness")
        methods = {"batch", "hessian"} | ({"preconditioned"} if name == "adam" else set())
        assert {e["method"] for e in events} == methods
        assert len(events) == 6 * len(methods)  # budget 1.0: every step measured
        for e in events:
            want = exact[e["step"]][e["method"]]
            assert abs(e["value"] - want) <= 0.01 * abs(want), (name, e, want)
            assert e["hvps"] >= 1 and e["seconds"] > 0
            if e["method"] != "batch":
                assert e["warm_start"] == (e["step"] > 0)
                assert e["converged"] and e["tolerance"] == 1e-3
        warm = [e["hvps"] for e in events if e["method"] == "hessian" and e["warm_start"]]
        cold = [e["hvps"] for e in events if e["method"] == "hessian" and not e["warm_start"]]
        assert max(warm) < cold[0]


def test_activation_sparsity_counts_zero_relu_outputs(tmp_path: Path) -> None:
    model = _tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criterion = torch.nn.CrossEntropyLoss()
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    with Probe(model, optimizer, tmp_path / "run", loss_fn=criterion, hessian_batch=(x, y), sharpness_budget=1.0, system_stats=False) as probe:
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        probe.step(loss)
        with torch.no_grad():
            hidden = model[3](model[2](model[1](model[0](x))))
        expected = float((hidden == 0).double().mean())
    (event,) = _events(tmp_path / "run", "activations")
    assert event["layers"] == ["3"] and event["step"] == 0
    assert event["zero_fraction"][0] == expected and 0 < expected < 1


class _PaperMLP(torch.nn.Module):
    """Bias-free MLP with LayerNorm without affine, last layer fixed (the paper's setting)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Sequential(
            torch.nn.Linear(32, 32, bias=False), torch.nn.LayerNorm(32, elementwise_affine=False), torch.nn.ReLU(),
            torch.nn.Linear(32, 32, bias=False), torch.nn.LayerNorm(32, elementwise_affine=False), torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(32, 1, bias=False)
        self.head.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x)).squeeze(-1)


def test_scale_invariant_groups_are_detected_and_get_an_effective_lr(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = _PaperMLP()
    extra_layer = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(
        [{"params": model.hidden.parameters(), "lr": 0.02}, {"params": extra_layer.parameters(), "lr": 0.1}]
    )
    criterion = torch.nn.BCEWithLogitsLoss()
    x, y = torch.randn(16, 32), torch.randint(0, 2, (16,)).float()

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return criterion(extra_layer(model(x)[:, None])[:, 0], y)

    with Probe(model, optimizer, tmp_path / "run", hessian_loss=lambda: loss_of(x, y), sharpness_budget=0, system_stats=False) as probe:
        for _ in range(3):
            loss = loss_of(x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # the paper keeps the trained weights on the unit sphere
                params = list(model.hidden.parameters())
                total = torch.sqrt(sum(p.square().sum() for p in params))
                for p in params:
                    p.div_(total)
            probe.step(loss)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert [g["scale_invariant"] for g in meta["optimizer"]["param_groups"]] == [True, False]
    for event in _events(tmp_path / "run", "step"):
        assert math.isclose(event["effective_lr"][0], 0.02, rel_tol=1e-5)  # ‖w‖ = 1 after projection
        assert event["effective_lr"][1] is None


def _cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Dropout(0.3),
        torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10),
    )


def _train(tmp_path: Path | None, make_optimizer, steps: int = 12) -> tuple[dict, dict, torch.Tensor]:
    torch.manual_seed(7)
    model = _cnn()
    optimizer = make_optimizer(model.parameters())
    criterion = torch.nn.CrossEntropyLoss()
    data = torch.Generator().manual_seed(11)
    hx, hy = torch.randn(16, 1, 8, 8, generator=data), torch.randint(0, 10, (16,), generator=data)
    probe = None
    if tmp_path is not None:
        probe = Probe(model, optimizer, tmp_path, loss_fn=criterion, hessian_batch=(hx, hy), sharpness_budget=1.0)
    for _ in range(steps):
        x, y = torch.randn(32, 1, 8, 8, generator=data), torch.randint(0, 10, (32,), generator=data)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if probe is not None:
            probe.step(loss)
    if probe is not None:
        probe.close()
    assert model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {
        (i, k): v.clone() if isinstance(v, torch.Tensor) else v
        for i, s in enumerate(optimizer.state.values())
        for k, v in s.items()
    }
    return state, opt_state, torch.get_rng_state()


def test_measuring_leaves_the_run_bitwise_identical(tmp_path: Path) -> None:
    optimizers = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
    }
    for name, make in optimizers.items():
        plain = _train(None, make)
        probed = _train(tmp_path / name, make)
        assert plain[0].keys() == probed[0].keys()
        for key in plain[0]:  # weights and BatchNorm running statistics
            assert torch.equal(plain[0][key], probed[0][key]), (name, key)
        for key in plain[1]:
            assert torch.equal(torch.as_tensor(plain[1][key]), torch.as_tensor(probed[1][key])), (name, key)
        assert torch.equal(plain[2], probed[2])  # the dropout RNG stream goes on where it was
        measured = _events(tmp_path / name, "sharpness")
        assert len({e["step"] for e in measured}) >= 4  # sharpness really ran, several times
        assert all(math.isfinite(e["value"]) for e in measured)


def test_hessian_products_are_exact_on_the_flat_gradient_and_with_an_unused_parameter() -> None:
    """``HessianOperator.flat`` against the exact Hessian: on a model whose parameters all enter
    the loss (one flat gradient in the graph, one grad_output per product) and on one with a
    parameter the loss never uses (the per-parameter path, a zero row and column)."""
    model = _tiny_model()
    x = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    loss_fn = torch.nn.functional.cross_entropy
    exact, _ = _exact_hessian(model, loss_fn, x, y)
    from probes.sharpness import HessianOperator

    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    v = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    whole = HessianOperator(loss_fn(model(x), y), params)
    assert whole._whole is not None  # the flat-gradient path
    assert torch.allclose(whole.flat(v), exact @ v, rtol=1e-10, atol=1e-12)
    assert torch.allclose(whole.flat(2 * v), 2 * (exact @ v), rtol=1e-10, atol=1e-12)  # the graph is kept
    unused = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    partial = HessianOperator(loss_fn(model(x), y), [*params, unused])
    assert partial._whole is None
    hv = partial.flat(torch.cat([v, torch.ones(4, dtype=torch.float64)]))
    assert torch.allclose(hv[:n], exact @ v, rtol=1e-10, atol=1e-12) and torch.equal(hv[n:], torch.zeros(4, dtype=torch.float64))
    assert whole.products == 2 and partial.products == 1
