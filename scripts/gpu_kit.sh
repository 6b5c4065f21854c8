#!/usr/bin/env bash
# The device kit: runs benchmarks/gpu_check.py on a GPU machine whose Python has torch and
# transformers but not DeepSpeed or its needs, and that reaches no package index.
#
#   bash scripts/gpu_kit.sh gather          # here: the missing wheels into .whl/ (git-ignored); prints
#                                           # the size of working tree + wheels and the device command
#   bash scripts/gpu_kit.sh install DIR     # there: those wheels into DIR, offline (--no-index)
#   bash scripts/gpu_kit.sh run             # there: install into a fresh folder, run gpu_check with
#                                           # its JSON (rewritten after every section) and log under $OUT
#
# Settings (environment): KIT_DIR (.whl), KIT_PYTHON_VERSION (3.12: the GPU image's Python; the
# wheels of compiled packages are chosen for it), PYTHON (gather: .venv/bin/python; run/install:
# python3), BUDGET_S (run: gpu_check's --budget-s, 360), GPU_CHECK_ARGS (run: more arguments).
# Versions are requirements.lock's, one of each.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT_DIR=${KIT_DIR:-.whl}
LIMIT_MIB=64 # what the device machine accepts: working tree + carried wheels

# DeepSpeed's own needs that the GPU image lacks (it has torch, numpy, packaging, psutil, tqdm, ninja),
# plus the small pure ones it may hold in another version: carried, they are the ones imported.
KIT_PACKAGES=(hjson pydantic pydantic_core annotated-types typing-inspection typing_extensions py-cpuinfo msgpack einops)

pin() { # NAME -> NAME==VERSION from requirements.lock ('-' and '_' alike)
  local pattern line
  pattern="^$(echo "$1" | sed 's/[-_]/[-_]/g')=="
  line=$(grep -iE "$pattern" requirements.lock | head -1)
  [ -n "$line" ] || { echo "gpu_kit: $1 is not pinned in requirements.lock" >&2; exit 1; }
  echo "$line"
}

tree_bytes() { # what the device call sends: tracked files and untracked files git does not ignore
  git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}'
}

gather() {
  local python=${PYTHON:-.venv/bin/python} version=${KIT_PYTHON_VERSION:-3.12}
  rm -rf "$KIT_DIR" && mkdir -p "$KIT_DIR"
  # DeepSpeed is a source package, pure Python once built (its ops are compiled on first use, by
  # ninja + nvcc there): build its wheel against our torch, not in an isolated build environment.
  "$python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$KIT_DIR" "$(pin deepspeed)"
  local specs=()
  for name in "${KIT_PACKAGES[@]}"; do specs+=("$(pin "$name")"); done
  "$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$version" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$KIT_DIR" "${specs[@]}"
  local names
  names=$(ls "$KIT_DIR"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort)
  if [ "$(echo "$names" | uniq -d)" ]; then
    echo "gpu_kit: more than one version of: $(echo "$names" | uniq -d | tr '\n' ' ')" >&2
    exit 1
  fi
  local tree wheels total
  tree=$(tree_bytes)
  wheels=$(du -cb "$KIT_DIR"/*.whl | tail -1 | cut -f1)
  total=$((tree + wheels))
  ls -1 "$KIT_DIR"
  awk -v t="$tree" -v w="$wheels" -v s="$total" -v l="$LIMIT_MIB" 'BEGIN {
    printf "working tree %.1f MiB + wheels %.1f MiB = %.1f MiB (limit %d MiB)\n", t/2^20, w/2^20, s/2^20, l }'
  if [ "$total" -ge $((LIMIT_MIB * 1024 * 1024)) ]; then
    echo "gpu_kit: over the ${LIMIT_MIB} MiB the device machine accepts" >&2
    exit 1
  fi
  echo "device command (carry: [\"$KIT_DIR\"]):  bash scripts/gpu_kit.sh run"
}

install() {
  local target=${1:?usage: gpu_kit.sh install DIR}
  "${PYTHON:-python3}" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$target" "$KIT_DIR"/*.whl
}

run() {
  local out=${OUT:-outputs/gpu_kit} site
  mkdir -p "$out"
  site=$(mktemp -d /tmp/gpu-kit-site-XXXX)
  install "$site"
  # the kit's packages first, then the project from this tree (it is not installed there)
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/torch-extensions} MAX_JOBS=${MAX_JOBS:-16}
  { nvidia-smi || true; "${PYTHON:-python3}" -m pip list 2>/dev/null || true; } >"$out/machine.txt" 2>&1
  # shellcheck disable=SC2086 # GPU_CHECK_ARGS is split into arguments on purpose
  "${PYTHON:-python3}" benchmarks/gpu_check.py --out "$out/gpu_check.json" --budget-s "${BUDGET_S:-360}" \
    ${GPU_CHECK_ARGS:-} 2> >(tee "$out/gpu_check.log" >&2) | tail -c 20000 >"$out/gpu_check.stdout"
  echo "gpu_kit: results in $out/gpu_check.json"
}

case "${1:-gather}" in
  gather) gather ;;
  install) install "${2:-}" ;;
  run) run ;;
  *) echo "usage: gpu_kit.sh [gather | install DIR | run]" >&2; exit 2 ;;
esac
