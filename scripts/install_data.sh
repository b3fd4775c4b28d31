#!/usr/bin/env bash
# Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (no download at run time).
# scikit-learn digits and MNIST-1D ship with their Python packages and need nothing here.
set -u
DEBIAN_DIR="${NEUMETA_CL_DEBIAN_FMNIST:-/usr/share/datasets/fashion-mnist}"
if [ -f "$DEBIAN_DIR/train-images-idx3-ubyte.gz" ] || [ -f "$DEBIAN_DIR/train-images-idx3-ubyte" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  fi
  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist) ..." >&2
  if $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
     || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; then
    exit 0
  fi
fi
cat >&2 <<MSG
note: Fashion-MNIST is not installed and could not be installed automatically.
      Install it with:  sudo apt-get install dataset-fashion-mnist
      or point a run at a folder holding the IDX files:  benchmark.root=/path/to/fashion-mnist
      or, with a network, allow a download:  benchmark.download=true
      Benchmarks on digits and MNIST-1D work without it.
MSG
exit 0
