#!/usr/bin/env bash
# Makes sure Fashion-MNIST is installed: Debian's dataset-fashion-mnist package, in /usr/share/datasets/fashion-mnist
# (or the four IDX files in $FASHION_MNIST_DIR). Installs the package when it is missing, as root or through sudo,
# updating the package lists first (a fresh machine has none). Exits non-zero, saying why, when it cannot.
set -euo pipefail
dir=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
have_data() {
  local f
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [ -f "$dir/$f.gz" ] || [ -f "$dir/$f" ] || return 1
  done
}
if have_data; then
  exit 0
fi
if [ -n "${FASHION_MNIST_DIR:-}" ]; then
  echo "FASHION_MNIST_DIR=$FASHION_MNIST_DIR does not hold the four Fashion-MNIST IDX files." >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "Fashion-MNIST is missing and installing it needs root: run 'apt-get update && apt-get install dataset-fashion-mnist' as root." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "Fashion-MNIST is missing and this system has no apt-get: put the four IDX files in a folder and set FASHION_MNIST_DIR to it." >&2
  exit 1
fi
echo "Installing dataset-fashion-mnist (Debian package, about 30 MB)..."
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
have_data || { echo "dataset-fashion-mnist is installed but $dir lacks the IDX files." >&2; exit 1; }
echo "Fashion-MNIST is in $dir."
