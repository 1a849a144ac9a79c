#!/usr/bin/env bash
# Install everything gpuship and its tests need on Debian 12 (as root), then make sure a Docker Engine answers.
# Idempotent: a second run installs nothing and starts nothing that already runs.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ca-certificates git make python3-venv python3-pip
  docker.io docker-registry skopeo umoci runc qemu-user-static binfmt-support
  squashfs-tools shellcheck gpgv debian-archive-keyring openssl apache2-utils
  docker-compose chromium debootstrap
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# uv, pinned; installed for the system Python when missing.
UV_VERSION=0.13.9
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION" >&2
  python3 -m pip install -q --break-system-packages "uv==$UV_VERSION" 2>/dev/null \
    || python3 -m pip install -q "uv==$UV_VERSION"
fi
export PATH="$HOME/.local/bin:$PATH"
uv sync -q --locked

# arm64 containers run through qemu-user-static + binfmt_misc.
if [ -d /proc/sys/fs/binfmt_misc ] && [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 2>/dev/null || true

# A Docker Engine: use the one that answers, else start dockerd in the background.
if ! docker info >/dev/null 2>&1; then
  echo "bootstrap: starting dockerd" >&2
  mkdir -p /var/log
  nohup dockerd >/var/log/gpuship-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not start; see /var/log/gpuship-dockerd.log" >&2; exit 1; }
fi
