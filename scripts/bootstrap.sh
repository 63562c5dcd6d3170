#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian 12 machine:
# Debian packages (podman with runc, mmdebstrap, ...), the virtual environment in .venv,
# and the cached systemd base images. Safe to re-run: every step is skipped when done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

apt_packages=(podman runc uidmap slirp4netns fuse-overlayfs netavark aardvark-dns
  containernetworking-plugins mmdebstrap python3-venv git make openssl)
# The relay image pipeline (docs/images.md): GPT, ESP, ext4, boot loader, bmap, compression, and
# QEMU with UEFI firmware for the boot test (without recommends: no desktop libraries).
image_packages=(fdisk dosfstools mtools e2fsprogs systemd-boot-efi bmap-tools zstd qemu-utils swtpm swtpm-tools
  mdadm  # reads back the md member superblock a mirrored root gets (tests/test_image_mdsuper.py)
  qemu-system-x86 ovmf)

missing_of() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(missing_of "${apt_packages[@]}")
mapfile -t missing_image < <(missing_of "${image_packages[@]}")
if [ ${#missing[@]} -gt 0 ] || [ ${#missing_image[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]} ${missing_image[*]}" >&2
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ${#missing_image[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing_image[@]}" >/dev/null
fi

stamp=.venv/.xnat-fleet-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: creating .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

export CONTAINERS_CONF="$root/molecule/shared/containers.conf"
bash scripts/build-base-image.sh
