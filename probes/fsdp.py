"""FSDP in the probe: the gradient, update and weight norms of the whole model, from every rank's shard.

Under FSDP each rank's optimizer holds a shard of the parameters (FSDP2 ``fully_shard``: DTensors;
FSDP1 ``FullyShardedDataParallel``: flat parameters), so rank 0 alone sees a part of the gradient.
Every rank therefore measures its own shard at the same optimizer steps (the stride is fixed: no
adaptive stride) and the squared sums are added across the ranks with one small asynchronous
all-reduce per measured step, on a process group of the probe's own, so they never interleave with
the training's collectives. Rank 0 waits for them when it writes a batch of step events. Where
shards are replicated (HSDP, FSDP1 hybrid and NO_SHARD) the sum over all ranks counts each replica
group once per replica, and is divided by their number.

The ranks must agree to take part: a rank whose step metrics fail sends one last sum marked "left"
(so the others' pending all-reduce completes) and never another; a rank that receives one stops
measuring too and says so once. Layouts the probe cannot sum right (a Partial placement, a mesh that
is not the whole world, DTensor and plain parameters mixed) are refused with one line: the step
events then have no gradient, update or weight norm rather than a shard's.
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from probes.step_metrics import DEVICE_FLUSH_EVERY, _losses_to_host, trained_parameters

#: Longest rank 0 waits, on gloo, for the other ranks' share of a measured step at a flush. Ranks
#: run within a step of each other (FSDP's own collectives keep them so); this only bounds a
#: rank that stopped without saying so.
WAIT_SECONDS = 300.0
#: Step-event fields that are sums over the shards.
NORM_FIELDS = ("grad_norm", "update_norm", "weight_norm")


@dataclass
class Layout:
    """How the optimizer's parameters are spread over the ranks."""

    kind: str  # "fsdp2" or "fsdp1"
    replicas: int  # how many ranks hold each element (the sum over all ranks is divided by it)
    refused: str | None = None  # why the norms cannot be summed right, if so


def sharded_layout(model: torch.nn.Module, optimizer: Any, world_size: int) -> Layout | None:
    """The FSDP layout of a run, or None when its parameters are not sharded (no FSDP, DDP)."""
    params, _ = trained_parameters(optimizer)
    dtensor = _dtensor_class()
    if dtensor is not None and any(isinstance(p, dtensor) for p in params):
        return _fsdp2_layout(params, dtensor, world_size)
    fsdp1 = [m for m in model.modules() if _is_fsdp1(m)]
    if not fsdp1:
        return None
    strategies = {getattr(m, "sharding_strategy", None) for m in fsdp1}
    groups = {id(getattr(m, "process_group", None)) for m in fsdp1}
    if len(groups) != 1:
        return Layout("fsdp1", 1, "FSDP modules shard over different process groups")
    names = {getattr(s, "name", str(s)) for s in strategies}
    if names == {"NO_SHARD"}:
        return None  # every rank holds the whole model: its own norms are the global ones
    if "NO_SHARD" in names:
        return Layout("fsdp1", 1, "FSDP modules mix NO_SHARD with sharded strategies")
    group = getattr(fsdp1[0], "process_group", None)
    shard_size = dist.get_world_size(group) if group is not None else world_size
    if shard_size <= 0 or world_size % shard_size:
        return Layout("fsdp1", 1, f"a shard group of {shard_size} ranks in a world of {world_size}")
    return Layout("fsdp1", world_size // shard_size)


def _fsdp2_layout(params: list[torch.Tensor], dtensor: type, world_size: int) -> Layout:
    replicas = set()
    for p in params:
        if not isinstance(p, dtensor):
            return Layout("fsdp2", 1, "DTensor and plain parameters in one optimizer")
        mesh, placements = p.device_mesh, p.placements
        if any(pl.is_partial() for pl in placements):
            return Layout("fsdp2", 1, "a parameter with a Partial placement")
        if mesh.size() != world_size:
            return Layout("fsdp2", 1, f"a device mesh of {mesh.size()} ranks in a world of {world_size}")
        copies = 1
        for dim, pl in enumerate(placements):
            if pl.is_replicate():
                copies *= mesh.size(dim)
        replicas.add(copies)
    if len(replicas) != 1:
        return Layout("fsdp2", 1, "parameters replicated over different mesh dimensions")
    return Layout("fsdp2", replicas.pop())


def _dtensor_class() -> type | None:
    # Only when already imported: a run that shards has imported it; any other pays nothing.
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _is_fsdp1(module: Any) -> bool:
    fsdp = sys.modules.get("torch.distributed.fsdp")
    cls = getattr(fsdp, "FullyShardedDataParallel", None)
    return cls is not None and isinstance(module, cls)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a (DTensor) parameter or gradient, as a plain tensor."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


class RankLink:
    """The probe's process group over every rank, and whether every rank still takes part."""

    def __init__(self, layout: Layout, world_size: int, n_groups: int, device: torch.device) -> None:
        self.layout = layout
        self.world_size = world_size
        self.group = dist.new_group()  # every rank calls it here, in Probe(): same order everywhere
        self.gloo = dist.get_backend(self.group) == "gloo"
        # The vector each measured step sums: [took part, Σg², ΣΔw², Σw², Σw² per param group]
        # (the engine sets it again when add_param_group changed the groups).
        self.width = 4 + n_groups
        self.device = torch.device("cpu") if self.gloo else device
        self.left = False  # this rank sent its last sum, or learnt that another rank left
        self.closing = False

    def reduce(self, vector: torch.Tensor) -> Any:
        """Start the sum of one measured step's vector over the ranks; returns its work handle."""
        return dist.all_reduce(vector, group=self.group, async_op=True)

    def leave(self) -> None:
        """Tell the other ranks, once, that this rank measures no more (its step metrics or its log failed)."""
        if self.left:
            return
        self.left = True
        try:
            dist.all_reduce(torch.zeros(self.width, dtype=torch.float64, device=self.device), group=self.group, async_op=True)
        except Exception:  # the group itself is broken: the others find out from it too
            pass

    def wait(self, work: Any) -> None:
        if self.gloo:
            work.wait(timeout=datetime.timedelta(seconds=WAIT_SECONDS))
        else:
            work.wait()


class ShardedNorms:
    """The per-step norms of ``probes.step_metrics``, for shards: each rank's squared sums, added
    over the ranks. A norm engine for ``StepMetrics(norms=...)`` (the interface of ``_ForeachNorms``)."""

    capacity = 1 << 30
    flush_every = DEVICE_FLUSH_EVERY

    def __init__(self, params: list[torch.Tensor], group_of: list[int], n_groups: int, link: RankLink | None) -> None:
        self.local = [_local(p.detach()) for p in params]
        self.snapshot = [torch.empty_like(t) for t in self.local]
        device = self.local[0].device if self.local else torch.device("cpu")
        self.zero = torch.zeros((), device=device)
        self.group_of = torch.as_tensor(group_of, dtype=torch.long, device=device)
        self.n_groups = n_groups
        self.link = link
        if link is not None:
            link.width = 4 + n_groups
        self.unreduced = 0  # rows measured while closing: no sum, so no norms

    def gradients(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        zero = self.zero
        return [zero if (g := p.grad) is None else _local(g) for p in params]

    def before(self, slot: int, linked: bool) -> None:
        if self.local:
            torch._foreach_copy_(self.snapshot, self.local)

    def measure(self, grads: list[torch.Tensor], slot: int, loss: Any) -> tuple[Any, Any]:
        kept = loss.detach() if isinstance(loss, torch.Tensor) else loss
        n = len(self.local)
        vector = torch.zeros(4 + self.n_groups, dtype=torch.float64, device=self.zero.device)
        if n:
            torch._foreach_sub_(self.snapshot, self.local)  # Δw = before - after
            sq = torch.stack(torch._foreach_norm(grads + self.snapshot + self.local)).to(torch.float64).square()
            vector[1] = sq[:n].sum()
            vector[2] = sq[n : 2 * n].sum()
            vector[3] = sq[2 * n :].sum()
            vector[4:].index_add_(0, self.group_of, sq[2 * n :])
        vector[0] = 1.0  # this rank took part
        link = self.link
        if link is None:
            return (vector, None), kept
        if link.closing or link.left:
            self.unreduced += 1
            return (None, None), kept
        if link.gloo and vector.device.type != "cpu":
            vector = vector.cpu()
        return (vector, link.reduce(vector)), kept

    def to_host(self, measured: list[Any], losses: list[Any]) -> tuple[np.ndarray, list[float | None]]:
        k = len(measured)
        out = np.full((k, 3 + self.n_groups), np.nan)
        link = self.link
        for i, (vector, work) in enumerate(measured):
            if vector is None:
                continue
            if work is not None:
                link.wait(work)
            row = vector.to("cpu").numpy()
            if link is not None and row[0] < link.world_size:
                link.left = True  # another rank stopped measuring; this one stops too, and says why
                raise RuntimeError("another rank stopped measuring its shard, so the norms of the whole model are gone")
            replicas = link.layout.replicas if link is not None else 1
            out[i] = np.sqrt(np.maximum(row[1:], 0.0) / replicas)
        return out, _losses_to_host(losses)


class ShardedRun:
    """The probe's FSDP part on one rank: the layout, the link between the ranks and the norm engine."""

    def __init__(self, layout: Layout, world_size: int, optimizer: Any) -> None:
        self.layout = layout
        self.link = None
        if layout.refused is None and world_size > 1:
            params, _ = trained_parameters(optimizer)
            device = _local(params[0]).device if params else torch.device("cpu")
            self.link = RankLink(layout, world_size, len(optimizer.param_groups), device)
        self._engine: ShardedNorms | None = None

    @classmethod
    def attach(cls, model: torch.nn.Module, optimizer: Any, world_size: int) -> ShardedRun | None:
        """The FSDP part for a run whose parameters are sharded, else None. Call it on every rank."""
        try:
            layout = sharded_layout(model, optimizer, world_size)
        except Exception as exc:  # an FSDP this code does not know: no norms rather than a shard's
            layout = Layout("fsdp", 1, f"its layout could not be read: {type(exc).__name__}: {exc}")
        if layout is None:
            return None
        try:
            return cls(layout, world_size, optimizer)
        except Exception as exc:  # the probe's process group could not be made
            return cls(Layout(layout.kind, 1, f"no process group for the sums: {type(exc).__name__}: {exc}"), world_size, optimizer)

    @property
    def measures(self) -> bool:
        """True when every rank must measure (the sums cross the ranks)."""
        return self.link is not None

    def engine(self, params: list[torch.Tensor], group_of: list[int], n_groups: int) -> ShardedNorms:
        self._engine = ShardedNorms(params, group_of, n_groups, self.link)
        return self._engine

    def refusal(self) -> str | None:
        """The one line that says the norms are off, when the layout is refused."""
        if self.layout.refused is None:
            return None
        return (f"gradient, update and weight norms under {self.layout.kind.upper()} ({self.layout.refused}): "
                "the probe sums only shards it can add up exactly, and logs no norm rather than a shard's")

    def finish(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Step events about to be written: norms a refused layout or a closing step lacks are left out
        (and the effective LRs made from them)."""
        engine = self._engine
        drop = len(events) if self.layout.refused is not None else (engine.unreduced if engine is not None else 0)
        if drop:
            for event in events[len(events) - drop :]:
                for name in NORM_FIELDS:
                    event.pop(name, None)
                if "effective_lr" in event:
                    event["effective_lr"] = [None] * len(event["effective_lr"])
            if engine is not None:
                engine.unreduced = 0
        return events

    def leave(self) -> None:
        if self.link is not None:
            self.link.leave()

    def close(self) -> None:
        if self.link is not None:
            self.link.closing = True  # a last step measured at close is not summed: a rank may be gone
