#!/usr/bin/env bash
# Runs the test suite on a fresh machine: set up (a no-op when done), then
# every tier; GPU tests skip themselves where there is no CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest tests "$@"
