#!/usr/bin/env bash
# Install the test dependencies (CPU torch pinned, from local disk) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e '.[probe,test]'
python -m pytest -q -p no:cacheprovider "$@"
