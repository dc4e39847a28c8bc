"""The probe under DDP: 2 processes on gloo; rank 0 writes, rank 1 writes nothing, no hang, synced grad norms."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

torch.set_num_threads(1)

STEPS = 5

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from probes import Probe

    def data(rank):
        g = torch.Generator().manual_seed(100 + rank)
        return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range({steps})]

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))

    def worker(rank, base, port):
        torch.set_num_threads(1)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        ddp = torch.nn.parallel.DistributedDataParallel(model())
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        criterion = torch.nn.CrossEntropyLoss()
        hx, hy = data(7)[0]
        probe = Probe(ddp, optimizer, os.path.join(base, f"run-rank{{rank}}"), loss_fn=criterion,
                      hessian_batch=(hx, hy), sharpness_budget=1.0)
        seen = []
        for x, y in data(rank):
            loss = criterion(ddp(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step(); probe.step(loss)
            seen.append(sum(float(p.grad.double().square().sum()) for p in ddp.parameters()) ** 0.5)
        probe.log(test_acc=0.5)
        probe.close()
        dist.barrier()  # every rank got here: no rank hangs in a collective the probe started
        with open(os.path.join(base, f"grads-{{rank}}.json"), "w") as f:
            json.dump(seen, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, join=True)
    """
).format(steps=STEPS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_rank0_writes_synced_grad_norms_and_nothing_hangs(tmp_path: Path) -> None:
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(_free_port())],
        capture_output=True, text=True, timeout=120, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},  # the script's own folder comes first on sys.path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run-rank0" / "meta.json").is_file()
    assert not (tmp_path / "run-rank1").exists()  # rank 1 writes nothing, not even a directory
    meta = json.loads((tmp_path / "run-rank0" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["rank"] == 0
    events = [json.loads(line) for line in (tmp_path / "run-rank0" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == list(range(STEPS))
    assert len({e["step"] for e in events if e["kind"] == "sharpness"}) == STEPS  # on the unwrapped module
    assert [e for e in events if e["kind"] == "warning"] == []

    # The synchronized gradient is the gradient of the loss on both ranks' batches together:
    # the oracle trains one process on the concatenated batches.
    seen = [json.loads((tmp_path / f"grads-{r}.json").read_text()) for r in (0, 1)]
    namespace: dict = {}
    exec(WORKER.split('if __name__ == "__main__":')[0], namespace)
    model = namespace["model"]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    for k, ((x0, y0), (x1, y1)) in enumerate(zip(namespace["data"](0), namespace["data"](1))):
        loss = criterion(model(torch.cat([x0, x1])), torch.cat([y0, y1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        full = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters()))
        assert math.isclose(steps[k]["grad_norm"], full, rel_tol=1e-4)
        assert math.isclose(seen[0][k], seen[1][k], rel_tol=1e-6)  # every rank holds the synced gradient
        assert math.isclose(steps[k]["grad_norm"], seen[0][k], rel_tol=1e-6)


FAILING_WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from probes import Probe

    FAIL_AT = 12

    def worker(rank, base, port):
        torch.set_num_threads(1)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        torch.manual_seed(0)
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(6, 3))
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        # The README's plain loop: no `with`, no try; the probe keeps steps on the host in batches.
        probe = Probe(ddp, optimizer, os.path.join(base, "run"), system_stats=False, sharpness_budget=0.0,
                      adaptive_stride=False, flush_every=1000)
        g = torch.Generator().manual_seed(rank)
        for step in range(1000):
            if rank == 1 and step == FAIL_AT:
                raise RuntimeError("rank 1 hit a bad batch")
            loss = ddp(torch.randn(8, 6, generator=g)).square().mean()
            optimizer.zero_grad(); loss.backward(); optimizer.step(); probe.step(loss)
        probe.close()

    if __name__ == "__main__":
        mp.spawn(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, join=True)
    """
)


def test_a_rank_that_raises_leaves_rank0s_log_flushed_and_ended(tmp_path: Path) -> None:
    script = tmp_path / "ddp_failing.py"
    script.write_text(FAILING_WORKER)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(_free_port())],
        capture_output=True, text=True, timeout=180, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode != 0 and "rank 1 hit a bad batch" in done.stderr, done.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["kind"] == "step"]
    # Rank 0 took every step rank 1 took (DDP's all-reduce in backward holds them together).
    assert steps[:12] == list(range(12)), steps
    end = [e for e in events if e["kind"] == "end"]
    assert len(end) == 1 and end[0]["status"] in ("failed", "terminated"), end
    assert events[-1]["kind"] == "end"
