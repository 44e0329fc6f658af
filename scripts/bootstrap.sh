#!/usr/bin/env bash
# Make this checkout ready to run: system packages (cross compilers, qemu-user), a virtual
# environment in .venv with dnsrec-edge and its pinned dependencies. Safe to run again:
# each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the compile and emulated-board tests use.
DEB_PACKAGES=(gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu qemu-user)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages ${missing[*]} (cross-compile and emulation tests will be skipped); install them with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: Python >= 3.11 is needed; set PYTHON=/path/to/python3.11" >&2; exit 1; }
  echo "bootstrap: creating .venv" >&2
  "$PY" -m venv .venv
fi

stamp=.venv/.dnsrec-edge-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing dnsrec-edge and its dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[tvm,dev]'
  echo "$want" > "$stamp"
fi
