"""Commands in a real training loop: applied between two steps, each at most once; bad files refused and logged."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from control_support import Training, write_raw
from lrtui.control import DONE_DIR, MAX_COMMAND_BYTES, REFUSED_DIR, CommandError, parse_command

torch.set_num_threads(1)


def _command(run_id: str, cid: str, **fields) -> bytes:
    return json.dumps({"schema": 1, "id": cid, "run_id": run_id, **fields}).encode()


def test_set_lr_applies_between_two_steps_and_is_logged(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", groups=2, control=True)
    t.step(5)
    cid = t.send("set_lr", lr=(0.03, 0.002))
    at = t.step_past_look()
    t.step(3)
    evs = t.close()
    assert t.lrs[at - 1] == pytest.approx([0.1, 0.01]) and t.lrs[at] == pytest.approx([0.03, 0.002])
    assert t.lrs[-1] == pytest.approx([0.03, 0.002])
    (action,) = [e for e in evs if e["kind"] == "action"]
    assert action["step"] == at and action["id"] == cid and action["source"] == "command"
    assert action["lr_before"] == pytest.approx([0.1, 0.01]) and action["lr_after"] == pytest.approx([0.03, 0.002])
    steps = {e["step"]: e for e in evs if e["kind"] == "step"}
    assert steps[at - 1]["lr"] == pytest.approx([0.1, 0.01]) and steps[at]["lr"] == pytest.approx([0.03, 0.002])
    assert (t.run_dir / "control" / DONE_DIR / f"{cid}.json").is_file() and not any(t.queue.iterdir())


def test_factor_and_drop_lr_move_every_group_by_one_factor(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", groups=2, control=True)
    t.step(2)
    t.send("set_lr", factor=0.5)
    a = t.step_past_look()
    t.send("drop_lr")  # no advice in the command: x0.1
    b = t.step_past_look()
    t.send("drop_lr", lr=0.001)  # the advisor's LR for group 0
    c = t.step_past_look()
    evs = t.close()
    assert t.lrs[a] == pytest.approx([0.05, 0.005])
    assert t.lrs[b] == pytest.approx([0.005, 0.0005])
    assert t.lrs[c] == pytest.approx([0.001, 0.0001])
    assert [e["action"] for e in evs if e["kind"] == "action"] == ["set_lr", "drop_lr", "drop_lr"]


def _bad_files(t: Training, tmp_path: Path) -> dict[str, str]:
    """Every way a file in the queue can be wrong; name -> the reason the run must give."""
    rid, q = t.run_id, t.queue
    ok = _command(rid, "0ok", action="set_lr", lr=0.5)
    write_raw(q, "1mode.json", _command(rid, "1mode", action="set_lr", lr=0.5), mode=0o622)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(_command(rid, "2link", action="set_lr", lr=0.5))
    (q / "2link.json").symlink_to(target)
    write_raw(q, "3json.json", b"{not json")
    write_raw(q, "4big.json", b" " * (MAX_COMMAND_BYTES + 1) + ok)
    write_raw(q, "5bound.json", _command(rid, "5bound", action="set_lr", factor=1e-9))
    write_raw(q, "6lr.json", _command(rid, "6lr", action="set_lr", lr=-1))
    write_raw(q, "7other.json", _command("someone-elses-run", "7other", action="set_lr", lr=0.5))
    write_raw(q, "8field.json", _command(rid, "8field", action="set_lr", lr=0.5, shell="rm -rf /"))
    write_raw(q, "9name.json", _command(rid, "not-its-name", action="set_lr", lr=0.5))
    os.mkfifo(q / "afifo.json", 0o600)
    write_raw(q, "bimplied.json", _command(rid, "bimplied", action="set_lr", lr=1e3))  # x1e4 of 0.1
    reasons = {"1mode": "writable by group or others", "2link": "a symbolic link", "3json": "not valid JSON",
               "4big": f"larger than {MAX_COMMAND_BYTES} bytes", "5bound": "outside [0.0001, 10]",
               "6lr": "not positive", "7other": "meant for another run", "8field": "unknown field 'shell'",
               "9name": "differs from its file name", "afifo": "not a regular file",
               "bimplied": "outside [0.0001, 10]"}
    if os.getuid() == 0:
        owned = write_raw(q, "cowner.json", _command(rid, "cowner", action="set_lr", lr=0.5))
        os.chown(owned, 65534, 65534)
        reasons["cowner"] = "owned by another user"
    return reasons


def test_bad_command_files_are_refused_logged_and_change_nothing(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", control=True)
    t.step(3)
    reasons = _bad_files(t, tmp_path)
    at = t.step_past_look()
    t.step_past_look()  # the inbox takes at most a few files per look
    t.step_past_look()
    evs = t.close()
    assert all(lr == [0.1] for lr in t.lrs), "a refused command changed the LR"
    assert not [e for e in evs if e["kind"] == "action"]
    warnings = {e["id"]: e for e in evs if e["kind"] == "warning" and e.get("source") == "control"}
    for name, reason in reasons.items():
        assert name in warnings, f"{name} was not refused"
        assert reason in warnings[name]["message"], (name, warnings[name]["message"])
        assert warnings[name]["step"] >= at
    # Refused unread go to refused/; a well-formed one refused at the step it would apply was
    # taken (it is in the ledger, done/), as an applied one would be.
    refused = {p.name for p in (t.run_dir / "control" / REFUSED_DIR).iterdir()}
    assert refused == {f"{n}.json" for n in reasons if n != "bimplied"}
    assert [p.name for p in (t.run_dir / "control" / DONE_DIR).iterdir()] == ["bimplied.json"]
    assert not list(t.queue.iterdir())
    assert "shell" not in json.dumps([e for e in evs if e["kind"] == "action"])
    assert (tmp_path / "elsewhere.json").is_file()  # the link's target is left alone


def test_a_command_id_applies_once_also_in_a_later_process_on_the_run(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", control=True)
    t.step()
    cid = t.send("set_lr", factor=0.5)
    t.step_past_look()
    # The same id again (a copy of the file, as a retried client might write it).
    write_raw(t.queue, f"{cid}.json", _command(t.run_id, cid, action="set_lr", factor=0.5))
    t.step_past_look()
    t.close()
    assert t.lrs[-1] == [0.05]
    # A later process on the same run directory (as a resumed run) reads the ledger.
    later = Training(tmp_path / "run", control=True, resume=True)
    assert later.run_dir == tmp_path / "run"
    write_raw(later.queue, f"{cid}.json", _command(later.run_id, cid, action="set_lr", factor=0.5))
    later.step_past_look()
    evs = later.close()
    assert later.lrs == [[0.1]]
    dup = [e for e in evs if e["kind"] == "warning" and e.get("id") == cid]
    assert len(dup) == 2 and all("duplicate id" in e["message"] for e in dup)
    assert len([e for e in evs if e["kind"] == "action"]) == 1


def test_without_control_nothing_in_the_run_directory_changes_the_run(tmp_path: Path) -> None:
    t = Training(tmp_path / "run")  # control off
    t.step()
    queue = t.queue
    queue.mkdir(parents=True)
    write_raw(queue, "x.json", _command(t.run_id, "x", action="set_lr", lr=0.5))
    t.step_past_look()
    t.step(2)
    evs = t.close()
    assert all(lr == [0.1] for lr in t.lrs)
    assert (queue / "x.json").is_file()  # never read, never moved
    assert not [e for e in evs if e["kind"] in ("action", "warning")]
    assert "control" not in json.loads((t.run_dir / "meta.json").read_text())["probe"]


def test_a_fault_in_the_control_path_turns_control_off_and_training_goes_on(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", control=True)
    t.model.lock = threading.Lock()  # a model that cannot be copied: AveragedModel fails inside the probe
    t.step(2)
    t.send("start_averaging")
    t.step_past_look()
    later = t.send("set_lr", factor=0.5)
    t.step_past_look()
    t.step(3)
    evs = t.close()
    assert all(lr == [0.1] for lr in t.lrs) and t.steps == 7
    (off,) = [e for e in evs if e["kind"] == "warning" and e.get("disabled")]
    assert off["source"] == "control" and "lock" in off["message"]
    assert t.probe.averaged_model is None
    assert (t.queue / f"{later}.json").is_file()  # control is off: the later command is not taken
    assert [e["status"] for e in evs if e["kind"] == "end"] == ["finished"]


def test_start_averaging_keeps_an_swa_average_and_saves_it_when_asked(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", control=True, save_averaged=True)
    t.step(4)
    assert t.probe.averaged_model is None
    from lrtui.control import Averaging
    t.send("start_averaging", averaging=Averaging(checkpoint_every=2, ema_decay=0.99))
    snapshots = [[p.detach().clone() for p in t.model.parameters()]]  # the first checkpoint: before step `start`
    start = t.step_past_look()
    for _ in range(6):
        if (t.steps - start) % 2 == 0:  # the next step's pre-step hook takes the weights as they are
            snapshots.append([p.detach().clone() for p in t.model.parameters()])
        t.step()
    averaged = t.probe.averaged_model
    assert int(averaged.n_averaged) == len(snapshots) == 4
    for p, ps in zip(averaged.module.parameters(), zip(*snapshots)):
        assert torch.allclose(p, torch.stack(ps).mean(0), atol=1e-6)
    evs = t.close()
    (action,) = [e for e in evs if e["kind"] == "action"]
    assert action["step"] == start and action["averaging"] == {"mode": "swa", "checkpoint_every": 2, "batchnorm": False}
    saved = torch.load(t.run_dir / "averaged_model.pt")
    assert all(torch.equal(saved[k], v) for k, v in averaged.module.state_dict().items())


def test_ema_averaging(tmp_path: Path) -> None:
    t = Training(tmp_path / "run", control=True, averaging="ema")
    t.step(2)
    from lrtui.control import Averaging
    t.send("start_averaging", averaging=Averaging(checkpoint_every=50, ema_decay=0.5))
    ema = [p.detach().clone() for p in t.model.parameters()]
    t.step_past_look()
    for _ in range(3):
        ema = [0.5 * e + 0.5 * p.detach() for e, p in zip(ema, t.model.parameters())]
        t.step()
    for p, e in zip(t.probe.averaged_model.module.parameters(), ema):
        assert torch.allclose(p, e, atol=1e-6)
    t.close()


@pytest.mark.parametrize("data, reason", [
    (b"[]", "not a JSON object"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "explode"}', "unknown action"),
    (b'{"schema": 2, "id": "a", "run_id": "r", "action": "set_lr", "lr": 1}', "schema is not 1"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "set_lr"}', "needs lr or factor"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "set_lr", "lr": 1, "factor": 2}', "not both"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "set_lr", "lr": "NaN"}', "not a number"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "set_lr", "lr": 1e400}', "not finite|not valid JSON"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "set_lr", "factor": 11}', "outside"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "set_lr", "lr": true}', "not a number"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "start_averaging", "lr": 1}', "takes no lr"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "drop_lr", "lr": [1, 2]}', "not a list"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "start_averaging", "averaging": '
     b'{"checkpoint_every": 0, "ema_decay": 0.9}}', "checkpoint_every"),
    (b'{"schema": 1, "id": "a", "run_id": "r", "action": "set_lr", "lr": 1, "source": "autopilot"}', "source"),
    (b'{"schema": 1, "id": "../a", "run_id": "r", "action": "set_lr", "lr": 1}', "no valid id"),
])
def test_parse_refuses_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        parse_command(data, "a", "r")


@pytest.mark.parametrize("step, since", [(0, 0), (17, 16), (40, 39), (2000, 0)])
def test_an_average_sized_from_any_segment_is_one_the_run_accepts(step: int, since: int) -> None:
    from lrtui.control import Averaging, size_averaging

    sized = size_averaging(step, since)
    assert sized.checkpoint_every >= 1 and 0 < sized.ema_decay < 1
    parse_command(_command("r", "a", action="start_averaging", averaging=Averaging(
        sized.checkpoint_every, sized.ema_decay).to_json()), "a", "r")


def test_the_action_step_is_the_logs_step_also_after_a_grad_scaler_skipped_one(tmp_path: Path) -> None:
    import time

    from control_support import events
    from lrtui.control import Command, new_command_id, write_command
    from lrtui.runlog.format import read_meta
    from probes import Probe
    from probes.control import LOOK_EVERY

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    probe = Probe(model, optimizer, tmp_path / "run", control=True, scaler=scaler, sharpness_budget=0,
                  system_stats=False, adaptive_stride=False)
    x = torch.randn(8, 4)

    def step(overflow: bool = False) -> None:
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if overflow:
            model.weight.grad.fill_(float("inf"))  # the scaler skips this optimizer step
        scaler.step(optimizer)
        scaler.update()
        probe.step(loss)

    for i in range(4):
        step(overflow=i == 1)
    write_command(tmp_path / "run", Command(new_command_id(), read_meta(tmp_path / "run")["run_id"], "set_lr", lr=0.05))
    time.sleep(LOOK_EVERY + 0.05)
    step()
    step()
    probe.close()
    logged = events(tmp_path / "run", "step")
    assert [e.get("skipped", False) for e in logged] == [False, True, False, False, False, False]
    (action,) = events(tmp_path / "run", "action")
    assert action["step"] == 4  # the log's index: the skipped step 1 has one too
    assert [e["lr"] for e in logged if e["step"] >= 4] == [[0.05], [0.05]] and logged[3]["lr"] == [0.1]


def test_a_resumed_run_numbers_its_actions_as_its_steps(tmp_path: Path) -> None:
    first = Training(tmp_path / "run", control=True)
    first.step(6)
    first.close()
    later = Training(tmp_path / "run", control=True, resume=True)  # continues at step 6
    later.step(2)
    later.send("set_lr", lr=0.03)
    local = later.step_past_look()  # this process's index of the step that ran with it
    later.step(2)
    evs = later.close()
    (resume,) = [e for e in evs if e["kind"] == "resume"]
    assert resume["step"] == 6
    (action,) = [e for e in evs if e["kind"] == "action"]
    steps = {e["step"]: e for e in evs[evs.index(resume):] if e["kind"] == "step"}
    assert action["step"] == 6 + local  # the run's step number, as the step events after the resume
    assert steps[action["step"]]["lr"] == pytest.approx([0.03]) and steps[action["step"] - 1]["lr"] == pytest.approx([0.1])
