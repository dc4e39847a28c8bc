#!/usr/bin/env bash
# Install the test dependencies (CPU torch pinned, from local disk), check lint (ruff) and types
# (mypy on lrtui/, config in pyproject.toml), and run the whole suite.
#
# The pinned torch goes first: installing the package with its open torch range alone would
# resolve a ~3 GB CUDA build. An existing torch of that version is kept as it is.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k runlog`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore torch==2.13.0
# With the optional extras the tests exercise (lightning, transformers, tensorboard); none brings a torch.
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[probe,test,lightning,transformers,tensorboard]'
# An extra that pulled another torch (a CUDA build, a newer release) would make the suite slow or wrong.
"$PYTHON" -c "import sys, torch; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'scripts/test.sh: torch {v} after the extras, not 2.13.0')"

# Lint and types first (seconds); the suite runs whatever they say, and the script fails if any failed.
checks=0
"$PYTHON" -m ruff check --quiet . || { echo "scripts/test.sh: ruff check found problems" >&2; checks=1; }
"$PYTHON" -m mypy || { echo "scripts/test.sh: mypy found problems" >&2; checks=1; }

# Each test gets at most 300 s (pytest-timeout, a traceback of where it hung); the whole suite at
# most 15 minutes, so CI never hangs. Exit status 5 (no tests collected) is a failure too.
status=0
timeout --signal=INT --kill-after=30 900 \
    "$PYTHON" -m pytest -q -p no:cacheprovider --timeout=300 "$@" || status=$?
case "$status" in
    0) exit "$checks" ;;
    5) echo "scripts/test.sh: pytest collected no tests: failing" >&2; exit 5 ;;
    124|130) echo "scripts/test.sh: the suite ran past 15 minutes: failing" >&2; exit "$status" ;;
    *) exit "$status" ;;
esac
