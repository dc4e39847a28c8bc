"""Benchmark of the probe's cost: step-time ratios with/without it, and warm- vs cold-start sharpness.

Run ``python benchmarks/probe_overhead.py`` (``--quick`` for a short run). Prints four tables:

(a) step time with the probe (cheap per-step metrics only, every step measured: ``adaptive_stride``
    off) / without, on a small CNN (batch 128) and on the paper's synthetic MLP (batch 16);
(b) the same with sharpness on under the default 5% budget (a fresh probe per timed block, so
    its start-up is paid every block; where the per-step metrics alone take more than half the
    budget, the probe's adaptive stride thins them, and the table says to which stride);
(c) Hessian-vector products, seconds and error against the top eigenvalue per sharpness
    estimate: the probe's warm start vs the cold-start power iteration of PyHessian/Cockpit
    (random start, relative tolerance 1e-3, at most 100 iterations, Rayleigh quotient), both on
    the same checkpoints of one training run (all but the first, where the probe has no warm start),
    the cold start from several random vectors at each; on the models of (a) and (b) and on a
    tiny CNN. The reference eigenvalue is exact (the full Hessian's) where the model is small
    enough, else the Krylov solver in float64 run to a residual bound the table prints;
(d) the framework callbacks: step time in a Lightning ``Trainer.fit`` and a Hugging Face
    ``Trainer.train`` with ``LrtuiCallback`` / without (the workloads are in
    ``benchmarks/integrations_overhead.py``; needs the extras ``lightning`` and ``transformers``).

Ratios are measured side by side in one process: blocks with and without the probe alternate
(their order rotates every repetition) and the table reports the median of the per-repetition
ratios and the ratio of the fastest blocks ("min"; the per-step ms columns are fastest blocks too).
A third arm, a plain twin of the plain model run in the same rotation, gives the "A/A" column:
its median ratio to the plain one, which would be 1.000 on a quiet machine. It is the noise
floor of its row: a ratio within that distance of the target is not resolved by the run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from probes import Probe
from probes.sharpness import HessianOperator, dot, random_vector, top_eigenvalue
from probes.sharpness_meter import SharpnessMeter


#: The clock blocks are timed with: process CPU time by default (all threads, so the probe's
#: writer and sampler threads count against it), which a machine shared with other jobs
#: disturbs far less than wall time; ``--wall`` switches to wall time.
CLOCK: Callable[[], float] = time.process_time


class PaperMLP(torch.nn.Module):
    """The synthetic-task MLP of Sadrtdinov et al. 2024: 32 inputs, two bias-free hidden layers of
    32 units with LayerNorm (no affine) and ReLU, a fixed last layer of norm 10, BCE loss."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Sequential(
            torch.nn.Linear(32, 32, bias=False), torch.nn.LayerNorm(32, elementwise_affine=False), torch.nn.ReLU(),
            torch.nn.Linear(32, 32, bias=False), torch.nn.LayerNorm(32, elementwise_affine=False), torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(32, 1, bias=False)
        with torch.no_grad():
            self.head.weight.mul_(10 / self.head.weight.norm())
        self.head.weight.requires_grad_(False)
        with torch.no_grad():  # trained weights on the unit sphere, as in the paper
            project_to_sphere(list(self.hidden.parameters()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x)).squeeze(-1)


def project_to_sphere(params: list[torch.Tensor]) -> None:
    """Rescale the trained weights to total norm 1 (the paper does it after every step)."""
    total = torch.sqrt(sum(p.square().sum() for p in params))
    for p in params:
        p.div_(total)


def small_cnn() -> torch.nn.Module:
    """A small CIFAR-shaped CNN (about 25k parameters)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 10),
    )


@dataclass
class Workload:
    """A model, its optimizer, data and loss, ready to train one step at a time."""

    name: str
    make_model: Callable[[], torch.nn.Module]
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    hessian_batch: tuple[torch.Tensor, torch.Tensor]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    after_step: Callable[[torch.nn.Module], None] | None = None


def cnn_workload() -> Workload:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)) for _ in range(8)]
    return Workload(
        "small CNN, batch 128, SGD+momentum",
        small_cnn,
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
        batches,
        batches[0],
        torch.nn.functional.cross_entropy,
    )


def mlp_workload() -> Workload:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 32, generator=g)
    teacher = torch.randn(32, generator=g)
    y = (x @ teacher > 0).float()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 512, 16)]

    def after(model: torch.nn.Module) -> None:
        with torch.no_grad():
            project_to_sphere(list(model.hidden.parameters()))

    return Workload(
        "paper's MLP, batch 16, SGD on the sphere",
        PaperMLP,
        lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01),
        batches,
        (x, y),  # sharpness on the whole training set, as the paper measures it
        torch.nn.functional.binary_cross_entropy_with_logits,
        after,
    )


def train_block(w: Workload, model: torch.nn.Module, optimizer: torch.optim.Optimizer, probe: Probe | None, steps: int, start: int) -> float:
    """Seconds for ``steps`` training steps (the probe's own calls included), by the chosen clock."""
    began = CLOCK()
    n = len(w.batches)
    for i in range(start, start + steps):
        x, y = w.batches[i % n]
        loss = w.loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if w.after_step is not None:
            w.after_step(model)
        if probe is not None:
            probe.step(loss)
    return CLOCK() - began


def fresh_models(w: Workload, n: int = 3) -> list[tuple[torch.nn.Module, torch.optim.Optimizer]]:
    """``n`` identical models with their optimizers: plain, probed, and a plain twin (the A/A arm)."""
    torch.manual_seed(0)
    first = w.make_model()
    models = [first] + [w.make_model() for _ in range(n - 1)]
    for m in models[1:]:
        m.load_state_dict(first.state_dict())
    return [(m, w.make_optimizer(m)) for m in models]


def ratios(plain: list[float], probed: list[float]) -> tuple[float, float]:
    """(median of per-repetition ratios, ratio of the fastest blocks).

    Other jobs on the machine only ever add time, so the fastest block of each kind is the
    least disturbed estimate of its cost.
    """
    return statistics.median(p / q for p, q in zip(probed, plain)), min(probed) / min(plain)


def rotated(arms: list, r: int) -> list:
    """The arms in the order of repetition ``r``: each takes each place equally often."""
    k = r % len(arms)
    return arms[k:] + arms[:k]


def overhead_cheap(w: Workload, steps: int, reps: int, runs: Path) -> tuple[float, float, float, float, float, float]:
    """(median ratio, fastest-block ratio, plain ms, probed ms, probe's own µs per step, A/A median ratio)."""
    (m0, o0), (m1, o1), (m2, o2) = fresh_models(w)
    probe = Probe(m1, o1, runs / f"cheap-{w.name[:5]}", sharpness_budget=0, adaptive_stride=False)
    for m, o, p in ((m0, o0, None), (m1, o1, probe), (m2, o2, None)):
        train_block(w, m, o, p, steps, 0)  # warm-up: allocator, caches, first-call costs
    times: dict[str, list[float]] = {"plain": [], "probe": [], "twin": []}
    own = probe._probe_seconds
    for r in range(reps):
        for arm, m, o in rotated([("plain", m0, o0), ("probe", m1, o1), ("twin", m2, o2)], r):
            times[arm].append(train_block(w, m, o, probe if arm == "probe" else None, steps, (r + 1) * steps))
    own = (probe._probe_seconds - own) / (reps * steps)  # wall seconds inside the probe per step
    probe.close()
    median, total = ratios(times["plain"], times["probe"])
    aa, _ = ratios(times["plain"], times["twin"])
    return median, total, min(times["plain"]) / steps * 1e3, min(times["probe"]) / steps * 1e3, own * 1e6, aa


def overhead_sharpness(w: Workload, steps: int, reps: int, runs: Path) -> tuple[float, float, int, float, list[int], float, float]:
    """(median ratio, fastest-block ratio, estimates, median probe fraction, final strides, A/A median ratio,
    share of the optimizer steps that were measured)."""
    (m0, o0), (m1, o1), (m2, o2) = fresh_models(w)
    for m, o in ((m0, o0), (m1, o1), (m2, o2)):
        train_block(w, m, o, None, 5, 0)
    times: dict[str, list[float]] = {"plain": [], "probe": [], "twin": []}
    measured, fractions, strides, logged = 0, [], [], 0
    for r in range(reps):
        for arm, m, o in rotated([("plain", m0, o0), ("probe", m1, o1), ("twin", m2, o2)], r):
            if arm != "probe":
                times[arm].append(train_block(w, m, o, None, steps, 5 + r * steps))
                continue
            began = CLOCK()
            with contextlib.redirect_stderr(io.StringIO()):  # its once-only stride notice: in the table instead
                probe = Probe(m, o, runs / f"sharp-{w.name[:5]}-{r}", loss_fn=w.loss_fn, hessian_batch=w.hessian_batch)
                train_block(w, m, o, probe, steps, 5 + r * steps)
                measured += probe.budget.measurements
                fractions.append(probe._probe_seconds / (time.perf_counter() - probe._wall_start))
                strides.append(probe.steps.stride)
                probe.close()
            times["probe"].append(CLOCK() - began)
            logged += count_step_events(probe.run_dir)
    median, total = ratios(times["plain"], times["probe"])
    aa, _ = ratios(times["plain"], times["twin"])
    return median, total, measured, statistics.median(fractions), strides, aa, logged / (reps * steps)


def count_step_events(run_dir: Path) -> int:
    """Step events in a closed run's log (one per measured optimizer step)."""
    with open(run_dir / "events.jsonl", "rb") as f:
        return sum(1 for line in f if line.startswith(b'{"kind":"step"'))


@contextlib.contextmanager
def float64_hessian(model: torch.nn.Module, w: Workload, params: list[torch.Tensor]):
    """The Hessian operator of the workload's loss on its hessian batch, the model in float64
    while inside (a reference's own precision, not the probe's)."""
    x, y = w.hessian_batch
    model.double()
    try:
        yield HessianOperator(w.loss_fn(model(x.double()), y.double() if y.is_floating_point() else y), params)
    finally:
        model.float()


def exact_top_eigenvalue(model: torch.nn.Module, w: Workload, params: list[torch.Tensor]) -> tuple[float, float]:
    """λ_max of the full Hessian, built column by column in float64 (the oracle; small models only).

    Returns (λ_max, 0.0): the second number is the reference's own error bound (none here)."""
    with float64_hessian(model, w, params) as hessian:
        n = sum(p.numel() for p in params)
        columns = []
        for i in range(n):
            e = torch.zeros(n, dtype=torch.float64)
            e[i] = 1.0
            hv = hessian(_shaped(e, params))
            columns.append(torch.cat([h.reshape(-1) for h in hv]))
        matrix = torch.stack(columns)
        eig = torch.linalg.eigvalsh(0.5 * (matrix + matrix.T))
    return float(eig[-1]), 0.0


def converged_top_eigenvalue(model: torch.nn.Module, w: Workload, params: list[torch.Tensor]) -> tuple[float, float]:
    """λ_max for a model too large for the full Hessian: the Krylov solver in float64 from a fresh
    random start, run to a relative error bound of 1e-10 (restarts included, up to 400 products).

    Returns (λ_max, bound): ``bound`` is ‖Hx − θx‖/|θ| at the final vector x (one more product),
    which bounds the relative distance from θ to an eigenvalue of H whatever the gap; a random
    start has a part along the top eigenvector with probability one, so θ is the top one."""
    with float64_hessian(model, w, params) as hessian:
        generator = torch.Generator().manual_seed(12345)
        start = [torch.randn(p.shape, dtype=torch.float64, generator=generator) for p in params]
        estimate = top_eigenvalue(hessian, start, tolerance=1e-10, max_iters=400)
        vector = estimate.vector
        image = hessian(vector)
        residual = [h - estimate.value * v for h, v in zip(image, vector)]
        bound = float(dot(residual, residual).sqrt() / dot(vector, vector).sqrt()) / abs(estimate.value)
    return estimate.value, bound


def _shaped(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for p in params:
        out.append(flat[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


#: Random starts of the cold-start baseline per checkpoint.
COLD_STARTS = 5


def warm_vs_cold(
    w: Workload,
    checkpoints: int,
    every: int,
    burn_in: int,
    tolerances: tuple[float, ...] = (1e-3,),
    reference: Callable[[torch.nn.Module, Workload, list[torch.Tensor]], tuple[float, float]] = exact_top_eigenvalue,
    cold_starts: int = COLD_STARTS,
) -> dict[str, list[float]]:
    """Along one training run: per checkpoint, HVPs/seconds/relative error of each start.

    The warm start is the probe's own code (``SharpnessMeter``, methods "batch" and "hessian"),
    once per tolerance (keys ``warm``, ``warm@<tol>``): ``<key>_hvps`` is the Hessian estimate's
    own products as the probe logs them, ``<key>_all`` adds the one batch-sharpness product
    whose gradient direction the estimate reuses. The cold start is PyHessian's loop from a
    fresh random vector. ``nohint`` (``nohint@<tol>``) is the same warm start without the batch
    product (method "hessian" alone): the estimator's cost standing alone. ``ref_bound`` holds
    the reference's own error bound per checkpoint.
    """
    torch.manual_seed(0)
    model = w.make_model()
    optimizer = w.make_optimizer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = w.hessian_batch
    meters = {}
    arms = []
    for i, tol in enumerate(tolerances):
        suffix = "" if i == 0 else f"@{tol:g}"
        arms.append((f"warm{suffix}", tol, ["batch", "hessian"]))
        # The same estimator without the batch product's direction: its cost standing alone.
        arms.append((f"nohint{suffix}", tol, ["hessian"]))
    for key, tol, methods in arms:
        meter = SharpnessMeter(model, params, lambda: w.loss_fn(model(x), y), optimizer, torch.device("cpu"), tolerance=tol, max_iters=100)
        meter.methods = methods  # ["batch", "hessian"]: the probe's own for SGD
        meters[key] = meter
    out: dict[str, list[float]] = {f"{k}_{m}": [] for k in [*meters, "cold"] for m in ("hvps", "all", "s", "err")}
    out["ref_bound"] = []
    generator = torch.Generator().manual_seed(1)
    train_block(w, model, optimizer, None, burn_in, 0)
    for c in range(checkpoints + 1):
        train_block(w, model, optimizer, None, every, burn_in + c * every)
        exact, bound = reference(model, w, params)
        out["ref_bound"].append(bound)
        # Both starts on the same checkpoints (the probe's first estimate is not a warm one); the
        # cold start from several random vectors each, as its cost and error depend on the draw.
        for _ in range(cold_starts if c > 0 else 0):
            began = time.perf_counter()
            hessian = HessianOperator(w.loss_fn(model(x), y), params)
            # PyHessian/Cockpit: random start, Rayleigh quotient, rel. tol 1e-3, <= 100 iterations.
            cold = _pyhessian_power_iteration(hessian, random_vector(params, generator), 1e-3, 100)
            out["cold_s"].append(time.perf_counter() - began)
            out["cold_hvps"].append(cold.hvps)
            out["cold_all"].append(cold.hvps)
            out["cold_err"].append(abs(cold.value - exact) / abs(exact))
        for key, meter in meters.items():
            logged = meter.measure(lambda method, exc: None).sharpness
            warm = next((m for m in logged if m["method"] == "hessian"), None)
            if c == 0 or warm is None:
                # The probe's very first estimate is a cold one: not counted as warm. One that did
                # not converge in its 100 products logs nothing (it goes on at the next checkpoint).
                continue
            out[f"{key}_s"].append(sum(m["seconds"] for m in logged))
            out[f"{key}_hvps"].append(warm["hvps"])
            out[f"{key}_all"].append(sum(m["hvps"] for m in logged))
            out[f"{key}_err"].append(abs(warm["value"] - exact) / abs(exact))
    return out


def _pyhessian_power_iteration(apply: HessianOperator, v: list[torch.Tensor], tol: float, max_iter: int):
    """PyHessian's ``eigenvalues`` loop for the top eigenvalue (normalize, Hv, Rayleigh quotient, stop on
    relative change), returning an object with ``value`` and ``hvps``."""
    from probes.sharpness import Estimate, dot, scaled

    v = scaled(v, 1.0 / dot(v, v).sqrt())
    eigenvalue = None
    for i in range(1, max_iter + 1):
        hv = apply(v)
        tmp = float(dot(hv, v))
        v = scaled(hv, 1.0 / dot(hv, hv).sqrt())
        if eigenvalue is not None and abs(eigenvalue - tmp) / (abs(eigenvalue) + 1e-6) < tol:
            return Estimate(tmp, i, True, False, None)
        eigenvalue = tmp
    return Estimate(eigenvalue, max_iter, False, False, None)


def frameworks(quick: bool, steps: int | None = None, reps: int | None = None, only: str = "") -> None:
    """Table (d): the Lightning and Hugging Face callbacks (``integrations_overhead``), each
    framework skipped with one line when it is not installed; ``only``: the workloads whose name
    contains it."""
    import integrations_overhead as frames  # this folder is on sys.path when run as a script

    frames.CLOCK = CLOCK
    steps = steps or (30 if quick else 60)
    reps = reps or (3 if quick else 7)
    print(f"\n(d) framework callbacks: {steps} optimizer steps per fit after {frames.WARM_STEPS} unclocked, {reps} repetitions (target <= 1.05)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make_rows in (("lightning", frames.lightning_rows), ("transformers", frames.transformers_rows)):
            try:
                rows += make_rows(steps, reps, Path(tmp), only)
            except ImportError as exc:
                print(f"  {name} rows skipped: {exc}")
    frames.report(rows)
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions (noisier)")
    parser.add_argument("--wall", action="store_true", help="time blocks by wall clock instead of process CPU time")
    parser.add_argument("--parts", default="abcd", help="which tables to print (default abcd)")
    parser.add_argument("--d-steps", type=int, default=None, help="(d): optimizer steps per fit (default 60, quick 30)")
    parser.add_argument("--d-reps", type=int, default=None, help="(d): repetitions (default 7, quick 3)")
    parser.add_argument("--d-only", default="", help="(d): only the workloads whose name contains this, e.g. \"tests' MLP\"")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    torch.set_num_threads(1)  # one core: stable timings on a shared machine
    quick = args.quick
    cnn, mlp = cnn_workload(), mlp_workload()
    print(f"torch {torch.__version__}, 1 thread, {'quick' if quick else 'full'} run, {'wall' if args.wall else 'process CPU'} time")
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        if "a" in args.parts:
            print("\n(a) cheap per-step metrics, every step measured: step time with probe / without (target CNN <= 1.02, MLP <= 1.05)")
            # "+us/step": (median - 1) x plain ms, what the probe adds to a step.
            # "own us": time inside the probe's calls per step (its hooks and probe.step), the part
            # of the cost the machine's noise does not blur; the ratios include everything else
            # (its writer thread, caches it evicts).
            print(f"{'workload':42} {'plain ms':>9} {'probe ms':>9} {'median':>7} {'min':>7} {'own us':>7} {'A/A':>6} {'+us/step':>8}")
            for w, steps, reps in ((cnn, 6 if quick else 12, 6 if quick else 15), (mlp, 200 if quick else 300, 9 if quick else 60)):
                median, total, t0, t1, own, aa = overhead_cheap(w, steps, reps, runs)
                print(f"{w.name:42} {t0:9.3f} {t1:9.3f} {median:7.3f} {total:7.3f} {own:7.1f} {aa:6.3f} {(median - 1) * t0 * 1e3:8.1f}")
                sys.stdout.flush()
        if "b" in args.parts:
            print("\n(b) with sharpness under the default 5% budget (fresh probe per block; target <= 1.06)")
            # "stride": where the probe's adaptive stride ended in each block (the per-step metrics
            # thinned so that they take at most half the budget).
            # "measured": the share of optimizer steps with a step event (1.00: every step).
            print(f"{'workload':42} {'estimates':>9} {'probe %':>8} {'median':>7} {'min':>7} {'A/A':>6} {'measured':>8}  stride")
            # Blocks long enough for the budget to admit estimates (the first waits for ~8 steps'
            # worth of slack, i.e. ~160 steps at 5%).
            for w, steps, reps in ((cnn, 200 if quick else 400, 1 if quick else 3), (mlp, 3000 if quick else 10000, 1 if quick else 9)):
                median, total, measured, fraction, strides, aa, share = overhead_sharpness(w, steps, reps, runs)
                print(f"{w.name:42} {measured:9d} {100 * fraction:8.2f} {median:7.3f} {total:7.3f} {aa:6.3f} {share:8.2f}  {','.join(map(str, strides))}")
                sys.stdout.flush()
    if "d" in args.parts:
        frameworks(quick, args.d_steps, args.d_reps, args.d_only)
    if "c" not in args.parts:
        return 0
    print("\n(c) per sharpness estimate: warm start (probe) vs cold start (PyHessian: random, tol 1e-3, <= 100 its)")
    # "HVPs": the Hessian estimate's own products, as the probe logs them; "+batch": with the one
    # batch-sharpness product (a measurement of its own) whose gradient direction it reuses.
    print(f"{'workload':42} {'start':>20} {'HVPs':>6} {'+batch':>6} {'ms':>8} {'mean err':>9} {'max err':>9}  (err: vs reference λ_max)")
    tiny_cnn = Workload(
        "tiny CNN (1.3k params), batch 64",
        lambda: torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 8, 3, stride=2), torch.nn.ReLU(),
            torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 10),
        ),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
        *(lambda b: (b, b[0]))(
            [(torch.randn(64, 1, 10, 10, generator=torch.Generator().manual_seed(i)), torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(i + 99))) for i in range(8)]
        ),
        torch.nn.functional.cross_entropy,
    )
    # The models of (a) and (b), estimates as far apart as the default 5% budget puts them there
    # (an estimate of 0.7-1.1 s on the small CNN's 66 ms steps: one per 200-330 steps, and (b)
    # logged one per 400-step block; ~20 ms on the MLP's 0.53 ms steps: one per ~750, and (b)
    # logged one per ~780), after a burn-in; the farther apart, the less the warm start helps. The small
    # CNN's reference is the solver itself in float64 run to a residual bound (its Hessian has
    # 6.4e8 entries); the MLP's is the exact Hessian. The tiny CNN (exact Hessian too) is a case
    # where the previous eigenvector is no guide, even 100 steps apart: see the README.
    cases = (
        (cnn, 3 if quick else 6, 400, 100, converged_top_eigenvalue, 3),
        (mlp, 3 if quick else 8, 750, 2000, exact_top_eigenvalue, COLD_STARTS),
        (tiny_cnn, 3 if quick else 8, 100, 200, exact_top_eigenvalue, COLD_STARTS),
    )
    for w, checkpoints, every, burn_in, reference, cold_starts in cases:
        # The probe's default tolerance bounds the error (‖r‖²/gap <= 1e-3); PyHessian's 1e-3 is a
        # relative change, which stops with larger errors. The other rows are the probe at looser
        # bounds, to compare HVPs nearer the cold start's accuracy; "no hint" rows leave out the
        # batch product, so no product is shared with another measurement.
        r = warm_vs_cold(w, checkpoints, every, burn_in, (1e-3, 3e-3, 1e-2), reference, cold_starts)
        arms = (("", "tol 1e-3", "default tolerance 1e-3"), ("@0.003", "tol 3e-3", "tolerance 3e-3"), ("@0.01", "tol 1e-2", "tolerance 1e-2"))
        rows = [(f"{k}{t}", f"{name}, {short}") for k, name in (("warm", "warm"), ("nohint", "no hint")) for t, short, _ in arms]
        for kind, label in [*rows, ("cold", "cold")]:
            print(
                f"{w.name:42} {label:>20} {statistics.mean(r[kind + '_hvps']):6.1f} {statistics.mean(r[kind + '_all']):6.1f} "
                f"{1e3 * statistics.mean(r[kind + '_s']):8.2f} {statistics.mean(r[kind + '_err']):9.2e} {max(r[kind + '_err']):9.2e}"
            )
        cold = statistics.mean(r["cold_hvps"])
        for t, _, label in arms:
            own, total = statistics.mean(r[f"warm{t}_hvps"]) / cold, statistics.mean(r[f"warm{t}_all"]) / cold
            alone = statistics.mean(r[f"nohint{t}_hvps"]) / cold
            print(f"{'':42} warm/cold HVPs at the {label}: {own:.2f} (+batch {total:.2f}), no hint {alone:.2f} (target <= 0.33 at equal or better accuracy)")
        print(f"{'':42} {len(r['cold_hvps'])} cold starts on {checkpoints} checkpoints {every} steps apart; reference's own bound <= {max(r['ref_bound']):.0e}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
