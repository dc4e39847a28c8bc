#!/usr/bin/env bash
# The package as a user without the repository gets it: build the wheel, install it into a fresh
# virtual environment without torch (no system site-packages), and from a directory outside the
# checkout run `lrtui advise` on a copied run, `lrtui demo` (which needs torch: a one-line
# error), and `lrtui demo --replay` in a real terminal (tmux, 80x24), read back and quit with q.
#
# Usage: bash scripts/check_wheel.sh   (PYTHON picks the interpreter; needs tmux for the last part)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
sock="lrtui-wheel-$$"
cleanup() { tmux -L "$sock" kill-server 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
say() { echo "check_wheel: $*"; }
fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }

started=$SECONDS
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/dist" "$root" 2>&1 \
    | grep -v "^WARNING: Location" || true
wheel="$(ls "$work"/dist/lrtui-*.whl)"
say "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB) in $((SECONDS - started)) s"

started=$SECONDS
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" 2>&1 \
    | grep -v "^WARNING: Location" || true
say "installed into a fresh venv in $((SECONDS - started)) s"
export PATH="$work/venv/bin:$PATH"
cd "$work"  # nothing from the checkout: not the working directory, not on sys.path
"$work/venv/bin/python" - <<'PY' || fail "torch is importable, or lrtui comes from the checkout"
import importlib.util, sys
import lrtui
assert importlib.util.find_spec("torch") is None, "torch is installed"
assert "site-packages" in lrtui.__file__, lrtui.__file__
PY

shipped="$("$work/venv/bin/python" -c 'from lrtui.demo import sample_sweep; print(sample_sweep())')"
case "$shipped" in *site-packages*) ;; *) fail "the demo runs are not in the package: $shipped" ;; esac
cp -r "$shipped/lr-8.11e-03" "$work/my-run"
lrtui advise my-run > advise.txt || fail "lrtui advise exited $?"
# The run's current phase is its fine-tuning; its first (pre-training) phase is the equilibrium.
grep -q "regime " advise.txt && grep -q "done: drop_lr" advise.txt || fail "lrtui advise: $(head -3 advise.txt)"
lrtui advise my-run --json | "$work/venv/bin/python" -c 'import json, sys; s = json.load(sys.stdin); assert s["segments"][0]["regime"] == "equilibrium", s["segments"]' \
    || fail "lrtui advise --json"
lrtui advise "$shipped" > sweep.txt || fail "lrtui advise on the sweep exited $?"
grep -q "convergence threshold" sweep.txt || fail "lrtui advise on the sweep: $(head -3 sweep.txt)"
say "lrtui advise on a copied run: $(head -1 advise.txt)"

status=0
lrtui demo 2> demo.err || status=$?
[ "$status" = 2 ] && [ "$(wc -l < demo.err)" = 1 ] && grep -q "torch" demo.err \
    || fail "lrtui demo without torch: exit $status: $(cat demo.err)"
say "lrtui demo without torch: exit 2, $(cat demo.err)"

if ! command -v tmux > /dev/null; then say "no tmux: lrtui demo --replay not checked"; exit 0; fi
tmux -L "$sock" -f /dev/null new-session -d -s demo -x 80 -y 24 \
    "cd '$work' && env -u COLUMNS -u LINES lrtui demo --replay; echo \"exit \$?\" > '$work/demo.exit'; sleep 30"
screen=""
for _ in $(seq 1 150); do
    screen="$(tmux -L "$sock" capture-pane -p -t demo)"
    if grep -q "regime" <<< "$screen" && grep -q "run 1/4" <<< "$screen"; then break; fi
    sleep 0.2
done
grep -q "run 1/4" <<< "$screen" && grep -q "replay" <<< "$screen" || fail "lrtui demo --replay never showed the runs:
$screen"
tmux -L "$sock" send-keys -t demo q
for _ in $(seq 1 75); do [ -f "$work/demo.exit" ] && break; sleep 0.2; done
[ "$(cat "$work/demo.exit" 2>/dev/null)" = "exit 0" ] || fail "lrtui demo --replay did not quit with q: $(cat "$work/demo.exit" 2>/dev/null)"
say "lrtui demo --replay at 80x24: $(head -1 <<< "$screen" | sed 's/  */ /g'); q quit it with status 0"
say "all checks passed"
