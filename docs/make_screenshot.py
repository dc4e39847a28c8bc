"""Record a short real training with the probe and save the replay screen as docs/screenshot-replay.svg.

Run: ``python docs/make_screenshot.py`` (CPU, about a minute). The run is a small MLP on
scikit-learn's 8x8 digits with momentum SGD (lr 0.3, β 0.9), shown on a log scale so
sharpness and its stability threshold 2(1+β)/η are both readable.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from lrtui.app import LrtuiApp
from probes import Probe

HERE = Path(__file__).resolve().parent


def record(run_dir: Path, steps: int = 1500, lr: float = 0.3, momentum: float = 0.9) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    criterion = torch.nn.CrossEntropyLoss()
    probe = Probe(model, optimizer, run_dir, name="digits-mlp-sgd", loss_fn=criterion,
                  hessian_batch=(x[:256], y[:256]), sharpness_budget=0.2)
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        batch = torch.randint(0, len(x), (32,), generator=generator)
        loss = criterion(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        probe.step(loss)
        if step % 250 == 249:
            with torch.no_grad():
                accuracy = (model(x).argmax(1) == y).float().mean().item()
            probe.log(train_acc=accuracy)
    probe.close()


async def screenshot(run_dir: Path, out: Path) -> None:
    app = LrtuiApp(run_dir, "replay", autoplay=False, start_at_end=True, system_interval=0)
    async with app.run_test(size=(160, 48)) as pilot:
        while not (app.position is not None and app.view.state is not None
                   and app.view.state.step == int(app.position)):
            await pilot.pause(0.05)
        await pilot.press("l")  # log scale: sharpness and its threshold both readable
        app.redraw()
        await pilot.pause()
        app.save_screenshot(str(out.name), str(out.parent))


def main() -> None:
    out = HERE / "screenshot-replay.svg"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "digits-mlp-sgd"
        record(run_dir)
        asyncio.run(screenshot(run_dir, out))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
