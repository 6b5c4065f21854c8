#!/usr/bin/env bash
# Creates .venv in the project root with the pinned dependencies; a second run with unchanged
# requirements does nothing. Needs Python 3.11 (set PYTHON to use another interpreter path).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.installed-$(cat requirements.txt requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# torch first and alone, so nothing later asks the resolver for one: a CPU machine never pulls a
# multi-GB CUDA build. On GPU nodes name the CUDA build's index, e.g.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 bash scripts/setup.sh
# (TORCH_SPEC changes the requirement itself; it is split into pip arguments.)
read -r -a torch_spec <<< "${TORCH_SPEC:-torch==2.13.0}"
"${pip[@]}" "${torch_spec[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"${pip[@]}" -c requirements.lock setuptools wheel ninja py-cpuinfo packaging setuptools-scm
# DeepSpeed is a source package: build it against the torch above, not in an isolated build
# environment that would fetch a torch of its own.
"${pip[@]}" --no-build-isolation -c requirements.lock deepspeed==0.19.8
# seqeval is a source package whose setup_requires would fetch the newest setuptools-scm, which
# no longer imports alone; build it with the pinned one above.
"${pip[@]}" --no-build-isolation -c requirements.lock seqeval==1.2.2
"${pip[@]}" -c requirements.lock -r requirements.txt
"${pip[@]}" --no-build-isolation --no-deps -e .
.venv/bin/python -m pip check
rm -f .venv/.installed-*
touch "$stamp"
