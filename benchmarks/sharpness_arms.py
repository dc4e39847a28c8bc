"""Benchmark of one sharpness estimate: its time against its products at a bare HVP's cost, and PyHessian.

Run ``python benchmarks/sharpness_arms.py`` (``--quick``: fewer checkpoints and repetitions).
On the models of ``probe_overhead.py`` (the paper's MLP, a small BatchNorm CNN), along one
training run, at each checkpoint the arms run side by side in a rotating order, ``--reps`` times:

- ``bare``: a bare double-backward HVP, ``torch.autograd.grad(grads, params, grad_outputs=v,
  retain_graph=True)`` on a graph built once, timed per product; ``twin``: the same again, the
  A/A arm (its ratio to ``bare`` is the noise floor of the run).
- ``build``: the graph alone (forward, backward with ``create_graph=True``).
- ``probe``: one measurement of the probe's ``SharpnessMeter`` (methods batch and hessian, as
  for SGD), warm-started from the previous checkpoint's state (restored before every
  repetition, so each repetition does the same work); its products as the meter counts them.
- ``pyhessian``: PyHessian 0.1's ``hessian(...).eigenvalues()`` (power iteration, relative
  change 1e-3, at most 100 products, a random start), constructor included; the model wrapped so
  that its ``eval()`` leaves BatchNorm in train mode (PyHessian's own ``eval()`` measures another
  loss). Its products are counted by wrapping its ``hessian_vector_product``.

Each arm's time at a checkpoint is its fastest repetition (other jobs only add time); the table
gives the median over checkpoints. The ratios: ``probe / (hvps x bare)`` for the whole measurement (graph included) and for its
products and solver alone (``probe - build``); the probe's time over PyHessian's; errors against
the top eigenvalue (exact on the MLP, a float64 Krylov solve with a residual bound on the CNN).
Then where the probe's time goes (one instrumented measurement per checkpoint), and the
estimates a 400-step run with default options logs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_overhead import (  # noqa: E402  (the workloads of the probe's other benchmark)
    Workload,
    cnn_workload,
    converged_top_eigenvalue,
    exact_top_eigenvalue,
    mlp_workload,
    rotated,
    train_block,
)

from probes import Probe  # noqa: E402
from probes.sharpness import HessianOperator  # noqa: E402
from probes.sharpness_meter import SharpnessMeter  # noqa: E402

#: Process CPU time by default (a machine shared with other jobs disturbs it far less than wall
#: time); ``--wall`` switches to wall time.
CLOCK: Callable[[], float] = time.process_time
BARE_PRODUCTS = 10  # products per bare block
LOOSE = 1e-2  # a second probe arm's tolerance, nearer PyHessian's error


class KeepTrainMode(torch.nn.Module):
    """The model, whose ``eval()`` (PyHessian calls it) leaves it in train mode."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def train(self, mode: bool = True) -> KeepTrainMode:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def bare_hvp(w: Workload, model: torch.nn.Module, params: list[torch.Tensor], n: int) -> tuple[float, float]:
    """(seconds per bare HVP, seconds of the graph build) on the hessian batch."""
    x, y = w.hessian_batch
    began = CLOCK()
    grads = torch.autograd.grad(w.loss_fn(model(x), y), params, create_graph=True)
    build = CLOCK() - began
    gen = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=gen) for p in params]
    began = CLOCK()
    for _ in range(n):
        torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
    per = (CLOCK() - began) / n
    del grads
    return per, build


def pyhessian_estimate(w: Workload, model: torch.nn.Module, seed: int) -> tuple[float, int, float]:
    """(λ, products, seconds) of PyHessian's top eigenvalue on the hessian batch."""
    import importlib

    ph = importlib.import_module("pyhessian.hessian")  # the module (the package's ``hessian`` is the class)

    counted = [0]
    product = ph.hessian_vector_product

    def counting(gradsH: Any, params: Any, v: Any) -> Any:
        counted[0] += 1
        return product(gradsH, params, v)

    ph.hessian_vector_product = counting
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(seed)
    try:
        began = CLOCK()
        h = ph.hessian(KeepTrainMode(model), w.loss_fn, data=w.hessian_batch, cuda=False)
        values, _ = h.eigenvalues(maxIter=100, tol=1e-3)
        seconds = CLOCK() - began
    finally:
        ph.hessian_vector_product = product
        for p in model.parameters():
            p.grad = None  # its backward(create_graph=True) left a graph in .grad
    return float(values[0]), counted[0], seconds


def snapshot(meter: SharpnessMeter) -> tuple[dict[str, Any], torch.Tensor]:
    return {m: (s.kept.clone() if s.kept is not None else None) for m, s in meter.solvers.items()}, meter._generator.get_state()


def restore(meter: SharpnessMeter, state: tuple[dict[str, Any], torch.Tensor]) -> None:
    kept, gen = state
    for m, s in meter.solvers.items():
        s.kept = kept[m].clone() if kept[m] is not None else None
        s.finished()
    meter._generator.set_state(gen)


def probe_estimate(meter: SharpnessMeter) -> tuple[dict[str, Any] | None, int, float]:
    """(the hessian event's fields or None, products of the whole measurement, seconds)."""
    began = CLOCK()
    result = meter.measure(lambda method, exc: None)
    seconds = CLOCK() - began
    fields = {e["method"]: e for e in result.sharpness}
    hessian = fields.get("hessian")
    products = fields["batch"]["hvps"] + (hessian["hvps"] if hessian else meter.solvers["hessian"].products)
    return hessian, products, seconds


def attribute(meter: SharpnessMeter) -> dict[str, float]:
    """Where one measurement's time goes: products (timed inside), the rest (graph, solver, copies)."""
    inside = [0.0]
    flat = HessianOperator.flat

    def timed(self: HessianOperator, v: torch.Tensor) -> torch.Tensor:
        began = CLOCK()
        out = flat(self, v)
        inside[0] += CLOCK() - began
        return out

    HessianOperator.flat = timed  # type: ignore[method-assign]
    try:
        began = CLOCK()
        meter.measure(lambda method, exc: None)
        total = CLOCK() - began
    finally:
        HessianOperator.flat = flat  # type: ignore[method-assign]
    return {"total": total, "products": inside[0]}


def run_model(w: Workload, checkpoints: int, every: int, burn_in: int, reps: int,
              reference: Callable[[torch.nn.Module, Workload, list[torch.Tensor]], tuple[float, float]]) -> dict[str, list[float]]:
    torch.manual_seed(0)
    model = w.make_model()
    optimizer = w.make_optimizer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = w.hessian_batch
    meter = SharpnessMeter(model, params, lambda: w.loss_fn(model(x), y), optimizer, torch.device("cpu"))
    meter.methods = ["batch", "hessian"]
    loose = SharpnessMeter(model, params, lambda: w.loss_fn(model(x), y), optimizer, torch.device("cpu"), tolerance=LOOSE)
    loose.methods = ["batch", "hessian"]
    out: dict[str, list[float]] = {k: [] for k in (
        "bare", "twin", "build", "probe_s", "probe_hvps", "probe_err", "py_s", "py_hvps", "py_err", "ratio_all",
        "ratio_solver", "vs_py", "ref_bound", "share_products", "cut", "loose_s", "loose_hvps", "loose_err", "loose_vs_py")}
    train_block(w, model, optimizer, None, burn_in, 0)
    meter.measure(lambda method, exc: None)  # the cold first estimate: not a checkpoint
    loose.measure(lambda method, exc: None)
    for c in range(checkpoints):
        train_block(w, model, optimizer, None, every, burn_in + c * every)
        exact, bound = reference(model, w, params)
        out["ref_bound"].append(bound)
        state, loose_state = snapshot(meter), snapshot(loose)
        times: dict[str, list[float]] = {"bare": [], "twin": [], "build": [], "probe": [], "py": [], "loose": []}
        for r in range(reps):
            for arm in rotated(["bare", "twin", "probe", "py", "loose"], r):
                if arm in ("bare", "twin"):
                    per, build = bare_hvp(w, model, params, BARE_PRODUCTS)
                    times[arm].append(per)
                    times["build"].append(build)
                elif arm in ("probe", "loose"):  # the probe's solver at the default and the loose tolerance
                    solver, kept = (meter, state) if arm == "probe" else (loose, loose_state)
                    restore(solver, kept)
                    fields, products, seconds = probe_estimate(solver)
                    times[arm].append(seconds)
                    if r == 0:
                        out[f"{arm}_hvps"].append(products)
                        if arm == "probe":
                            out["cut"].append(fields is None)
                        if fields is not None:
                            out[f"{arm}_err"].append(abs(fields["value"] - exact) / abs(exact))
                else:
                    value, products, seconds = pyhessian_estimate(w, model, seed=1000 * c + r)
                    times["py"].append(seconds)
                    out["py_hvps"].append(products)
                    out["py_err"].append(abs(value - exact) / abs(exact))
        # The fastest repetition of each arm: other jobs on the machine only ever add time.
        bare, build, probe, py = (min(times[k]) for k in ("bare", "build", "probe", "py"))
        out["bare"].append(bare)
        out["twin"].append(min(times["twin"]))
        out["build"].append(build)
        out["probe_s"].append(probe)
        out["py_s"].append(py)
        hvps = out["probe_hvps"][-1]
        out["ratio_all"].append(probe / (hvps * bare))
        out["ratio_solver"].append((probe - build) / (hvps * bare))
        out["vs_py"].append(probe / py)
        out["loose_s"].append(min(times["loose"]))
        out["loose_vs_py"].append(out["loose_s"][-1] / py)
        restore(loose, loose_state)
        loose.measure(lambda method, exc: None)  # advance it to this checkpoint
        restore(meter, state)
        share = attribute(meter)  # leaves the meter's state advanced to this checkpoint
        out["share_products"].append(share["products"] / share["total"])
    return out


def short_run(w: Workload, steps: int, runs: Path) -> tuple[int, int, int]:
    """(hessian estimates logged, of them converged, measurements that cut one) on a default probe."""
    torch.manual_seed(0)
    model = w.make_model()
    optimizer = w.make_optimizer(model)
    with contextlib.redirect_stderr(io.StringIO()):
        probe = Probe(model, optimizer, runs / w.name[:5], loss_fn=w.loss_fn, hessian_batch=w.hessian_batch, system_stats=False)
        train_block(w, model, optimizer, probe, steps, 0)
        probe.close()
    import json

    events = [json.loads(line) for line in (probe.run_dir / "events.jsonl").read_text().splitlines()]
    hessian = [e for e in events if e["kind"] == "sharpness" and e["method"] == "hessian"]
    return len(hessian), sum(e["converged"] is True for e in hessian), sum(e["slices"] - 1 for e in hessian)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--wall", action="store_true", help="time by wall clock instead of process CPU time")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    torch.set_num_threads(1)
    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    print(f"torch {torch.__version__}, 1 thread, {reps} repetitions per checkpoint, {'wall' if args.wall else 'process CPU'} time")
    cases = (
        (mlp_workload(), 3 if quick else 8, 250, 500, exact_top_eigenvalue),
        (cnn_workload(), 2 if quick else 4, 50, 50, converged_top_eigenvalue),
    )
    print(f"\n{'model':40} {'bare ms':>8} {'A/A':>6} {'build':>6} {'hvps':>5} {'probe ms':>9} {'/bare':>6} "
          f"{'solver':>6} {'prod%':>6} {'err med':>8} {'err max':>8} {'py hvps':>7} {'py ms':>8} {'py med':>8} "
          f"{'py max':>8} {'/py':>6} {'cut':>4}")
    med = statistics.median
    for w, checkpoints, every, burn_in, reference in cases:
        r = run_model(w, checkpoints, every, burn_in, reps, reference)
        aa = med(t / b for t, b in zip(r["twin"], r["bare"]))
        err = r["probe_err"] or [float("nan")]
        print(f"{w.name[:40]:40} {1e3 * med(r['bare']):8.2f} {aa:6.3f} {med(b / h for b, h in zip(r['build'], r['bare'])):6.2f} "
              f"{statistics.mean(r['probe_hvps']):5.1f} {1e3 * med(r['probe_s']):9.2f} {med(r['ratio_all']):6.2f} "
              f"{med(r['ratio_solver']):6.2f} {100 * med(r['share_products']):5.0f}% {med(err):8.1e} {max(err):8.1e} "
              f"{statistics.mean(r['py_hvps']):7.1f} {1e3 * med(r['py_s']):8.2f} {med(r['py_err']):8.1e} {max(r['py_err']):8.1e} "
              f"{med(r['vs_py']):6.2f} {sum(r['cut']):4d}")
        lerr = r["loose_err"] or [float("nan")]
        print(f"{'  the probe at tolerance ' + format(LOOSE, 'g'):40} {'':8} {'':6} {'':6} {statistics.mean(r['loose_hvps']):5.1f} "
              f"{1e3 * med(r['loose_s']):9.2f} {'':6} {'':6} {'':6} {med(lerr):8.1e} {max(lerr):8.1e} {'':7} {'':8} {'':8} {'':8} "
              f"{med(r['loose_vs_py']):6.2f}")
        if any(b > 0 for b in r["ref_bound"]):
            print(f"{'':40} reference: float64 Krylov, residual bound <= {max(r['ref_bound']):.1e} (relative)")
    print("\nbare ms: one bare double-backward HVP; A/A: its twin / it (noise floor); build: the graph, in bare HVPs;"
          "\nhvps: products of one probe measurement (batch 1 + hessian); /bare: probe time / (hvps x bare);"
          "\nsolver: (probe - build) / (hvps x bare); prod%: share of the probe's time inside products;"
          "\nerr: relative error of converged estimates vs the reference; py: PyHessian 0.1; /py: probe time / PyHessian's;"
          "\ncut: checkpoints whose estimate did not converge in one measurement (nothing logged there)")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\n{'400-step run, default options':40} {'logged':>7} {'converged':>10} {'cut measurements':>17}")
        for w in (mlp_workload(), cnn_workload()):
            n, conv, cuts = short_run(w, 400 if not quick else 200, Path(tmp))
            print(f"{w.name[:40]:40} {n:7d} {conv:10d} {cuts:17d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
