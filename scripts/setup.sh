#!/usr/bin/env bash
# Installs what colobench needs on Debian 12 (as root or with sudo), when it is missing.
#   build: cmake, a C compiler (gcc and clang), g++ (nvcc's host compiler for the CUDA module,
#          built when the CUDA toolkit is in /usr/local/cuda), libyaml-dev, oneDNN (libdnnl-dev),
#          libjpeg-turbo and libpng, OpenMP for clang (libomp-14-dev)
#   tests: clang's sanitizer/fuzzer runtimes (libclang-rt-14-dev), python3 (JSON checks,
#          the reference-architecture benchmark), python3-torch and python3-torchvision
#          (reference outputs for the neural-network layer, the PyTorch side of bench/)
# Idempotent: does nothing when everything is present. Set CB_SETUP_SKIP=1 to skip entirely.
set -euo pipefail
[ "${CB_SETUP_SKIP:-0}" = 1 ] && exit 0
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in cmake make gcc g++ clang libyaml-dev libclang-rt-14-dev python3 pkg-config procps \
         libdnnl-dev libjpeg62-turbo-dev libpng-dev libomp-14-dev python3-numpy \
         python3-torch python3-torchvision; do
  have_pkg "$p" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "setup: all build and test dependencies present"
  exit 0
fi
echo "setup: installing ${need[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
