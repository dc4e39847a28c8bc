"""The 2-process DDP sample run: the digits CNN under torch.distributed (gloo), rank 0 writes."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from probes import Probe
from probes.tasks.digits import DigitsCNN, make_digits_data
from probes.tasks.evaluation import evaluate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, run_dir: str, port: int, steps: int, lr: float,
            batch_size: int) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = make_digits_data(seed=0)
        model = DistributedDataParallel(DigitsCNN(seed=0))  # same init on every rank
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        extra = {"task": "digits-cnn-ddp", "lr": lr, "optimizer": "momentum", "momentum": 0.9,
                 "batch_size_per_rank": batch_size, "world_size": world_size, "steps": steps,
                 "backend": "gloo", "seed": 0}
        # Each rank trains on its own shard; the hessian batch is the same on every rank. The
        # budget is 0.25, not the default 0.05: a step of this small CNN takes ~9 ms, so the
        # probe's per-step metrics alone use ~9% of wall time and a 5% budget leaves no room
        # for a single sharpness estimate.
        x, y = data.x_train[rank::world_size], data.y_train[rank::world_size]
        g = torch.Generator().manual_seed(100 + rank)
        with Probe(model, optimizer, run_dir, loss_fn=loss_fn, hessian_batch=(data.x_train[:256], data.y_train[:256]),
                   name=Path(run_dir).name, sharpness_budget=0.25, adaptive_stride=False, extra=extra) as probe:
            for step in range(steps):
                idx = torch.randint(0, len(y), (batch_size,), generator=g)
                loss = loss_fn(model(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                probe.step(loss)
                if (step + 1) % 100 == 0 and rank == 0:
                    train_loss, train_acc = evaluate(model.module, data.x_train, data.y_train, loss_fn)
                    test_loss, test_acc = evaluate(model.module, data.x_test, data.y_test, loss_fn)
                    probe.log(phase="pretrain", full_train_loss=train_loss, train_acc=train_acc,
                              test_loss=test_loss, test_acc=test_acc)
    finally:
        dist.destroy_process_group()


def train_ddp(run_dir: str | os.PathLike[str], *, world_size: int = 2, steps: int = 600,
              lr: float = 0.05, batch_size: int = 32) -> dict[str, Any]:
    """Spawn ``world_size`` gloo processes that train the digits CNN with DDP and the probe."""
    mp.spawn(_worker, args=(world_size, str(run_dir), _free_port(), steps, lr, batch_size),
             nprocs=world_size, join=True)
    return {"lr": lr, "world_size": world_size, "steps": steps}
