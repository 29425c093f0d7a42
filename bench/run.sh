#!/usr/bin/env bash
# One command: install what the benchmark needs (the peer packages are benchmark-only
# extras, never runtime dependencies), then run it. Arguments go to bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v redis-server >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq wrk redis-server >/dev/null
fi
python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
python bench/run.py "$@"
