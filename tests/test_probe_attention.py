"""Sharpness on an attention model: the probe's passes use the math kernel, which has a double backward."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from probes import Probe

torch.set_num_threads(1)


class TinyAttention(torch.nn.Module):
    """One self-attention layer through ``F.scaled_dot_product_attention`` (a fused kernel on CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.unsqueeze(1) for t in self.qkv(x).chunk(3, dim=-1))  # (batch, 1 head, length, 8)
        return self.out(F.scaled_dot_product_attention(q, k, v).squeeze(1).mean(dim=1))


def test_the_fused_kernel_has_no_double_backward_here() -> None:
    """The premise: without the probe's kernel choice, a Hessian-vector product fails."""
    torch.manual_seed(0)
    model, x, y = TinyAttention(), torch.randn(4, 5, 8), torch.randint(0, 3, (4,))
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()), create_graph=True)
    dot = sum((g * torch.ones_like(g)).sum() for g in grads)
    try:
        torch.autograd.grad(dot, list(model.parameters()))
    except RuntimeError as exc:
        assert "not implemented" in str(exc)
    else:  # a torch whose default kernel has one: the probe's choice is then only a safeguard
        import pytest

        pytest.skip("this torch's default attention kernel has a double backward")


def test_sharpness_on_an_attention_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyAttention()
    x, y = torch.randn(16, 5, 8), torch.randint(0, 3, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with Probe(model, optimizer, tmp_path / "run", loss_fn=F.cross_entropy, hessian_batch=(x, y),
               sharpness_budget=1.0, system_stats=False) as probe:
        for _ in range(30):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            probe.step(loss)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    hessian = [e for e in events if e["kind"] == "sharpness" and e["method"] == "hessian"]
    assert hessian and all(math.isfinite(e["value"]) and e["value"] > 0 for e in hessian)
    assert [e for e in events if e["kind"] == "warning"] == []
