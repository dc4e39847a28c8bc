"""Two gloo processes training under FSDP with the probe on every rank (run by tests/test_probe_fsdp.py).

``python tests/fsdp_training.py OUT PORT`` runs each scenario in turn in the same process group and
writes what the loop saw to ``OUT/<scenario>-seen-<rank>.json``; rank 0's runs go to ``OUT/<scenario>``.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

STEPS = 6
SCENARIOS = ("fsdp2", "fsdp1", "mixed", "leave", "nolog")


def data(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(STEPS)]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))


def sharded(scenario: str) -> torch.nn.Module:
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    m = model()
    if scenario == "fsdp1":
        return FullyShardedDataParallel(m, device_id=torch.device("cpu"))
    if scenario == "mixed":
        fully_shard(m[0])  # the last layer stays a plain, replicated tensor on every rank
        return m
    fully_shard(m[0])
    fully_shard(m[2])
    fully_shard(m)
    return m


def run(scenario: str, rank: int, out: str) -> None:
    from probes import Probe

    m = sharded(scenario)
    optimizer = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    hx, hy = data(7)[0]
    run_dir = os.path.join(out, scenario if rank == 0 else f"{scenario}-rank{rank}")
    if scenario == "nolog" and rank == 0:
        run_dir = os.path.join(out, "fsdp2-seen-0.json", "run")  # under a file: rank 0 cannot write its run
    probe = Probe(m, optimizer, run_dir,
                  loss_fn=criterion, hessian_batch=(hx, hy), sharpness_budget=1.0, flush_every=1, system_stats=False)
    seen = []
    for k, (x, y) in enumerate(data(rank)):
        loss = criterion(m(x), y)
        optimizer.zero_grad()
        loss.backward()
        if scenario == "leave" and rank == 1 and k == 2:
            probe.steps.finish_step = None  # rank 1's step metrics break at step 2 (TypeError in probe.step)
        optimizer.step()
        probe.step(loss)
        seen.append(float(loss.detach()))
    probe.close()
    dist.barrier()  # every rank got here: none hangs in a sum the probe started
    with open(os.path.join(out, f"{scenario}-seen-{rank}.json"), "w") as f:
        json.dump(seen, f)


def worker(rank: int, out: str, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for scenario in SCENARIOS:
            run(scenario, rank, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    # Imported once here and forked: a spawned child would import torch (seconds) again.
    import torch.distributed.fsdp  # noqa: F401

    import probes  # noqa: F401

    mp.start_processes(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, join=True, start_method="fork")
