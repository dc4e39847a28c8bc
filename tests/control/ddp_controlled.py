"""Two gloo processes training with DDP and ``Probe(control=True)``; the test steers rank 0's run.

Run as ``python ddp_controlled.py WORKDIR PORT``. Before each optimizer step in ``WAIT_AT`` rank 0
writes ``WORKDIR/ready`` (the step) and waits for a command file (rank 1 waits for it in DDP's
all-reduce). Each rank writes ``WORKDIR/rank-R.json``: the LRs every step ran with, and its
averaged weights.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

STEPS = 44
WAIT_AT = (16, 32)


def worker(rank: int, workdir: str, port: int) -> None:
    from probes import Probe
    from probes.control import LOOK_EVERY

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    work = Path(workdir)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(),
                                                                          torch.nn.Linear(8, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    g = torch.Generator().manual_seed(rank)
    probe = Probe(model, optimizer, work / "run", control=True, sharpness_budget=0, system_stats=False,
                  adaptive_stride=False)
    lrs = []
    for step in range(STEPS):
        if rank == 0 and step in WAIT_AT:
            (work / "ready").write_text(str(step))
            queue = work / "run" / "control" / "commands"
            while not any(not n.startswith(".") for n in os.listdir(queue)):
                time.sleep(0.01)
            time.sleep(LOOK_EVERY + 0.2)
        x, y = torch.randn(16, 6, generator=g), torch.randn(16, 2, generator=g)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        scheduler.step()
        probe.step(loss)
    averaged = probe.averaged_model
    out = {"lrs": lrs, "n_averaged": int(averaged.n_averaged) if averaged is not None else 0,
           "averaged": [p.detach().reshape(-1).tolist() for p in averaged.module.parameters()] if averaged else []}
    probe.close()
    dist.barrier()  # no rank was left waiting in a collective of the probe's
    (work / f"rank-{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, join=True)
