#!/usr/bin/env bash
# Builds the systemd base image localhost/xnat-fleet-base:bookworm with mmdebstrap + podman import.
# No container registry is reachable, so the image is built from Debian's packages and cached:
# it is labelled with the sha256 of scripts/base-image.recipe and rebuilt only when that changes.
# Also builds localhost/xnat-fleet-peer:bookworm (base + client tools used by the tests' peer
# containers: ssh client, netcat, an SMTP sink).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
recipe="$here/base-image.recipe"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/../molecule/shared/containers.conf}"
# shellcheck source=/dev/null
. <(grep -E '^[a-z]+=' "$recipe")
hash=$(cat "$recipe" "$0" | sha256sum | cut -c1-16)  # contents only: any checkout path gives one hash
image=localhost/xnat-fleet-base:bookworm
peer=localhost/xnat-fleet-peer:bookworm

# The image carries no SSH host keys (every container would share them): each container
# creates its own at first boot, before sshd starts.
hostkeys_unit='[Unit]
Description=Create the missing SSH host keys of this host (xnat-fleet base image)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target'

current=$(podman image inspect --format '{{ index .Labels "xnat-fleet.recipe" }}' "$image" 2>/dev/null || true)
if [ "$current" != "$hash" ]; then
  echo "building $image (recipe $hash)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  printf '%s\n' "$hostkeys_unit" > "$work/xnat-fleet-ssh-hostkeys.service"
  mmdebstrap --quiet --variant="$variant" --include="$packages" \
    --customize-hook='echo xnat-fleet-base > "$1/etc/hostname"' \
    --customize-hook='rm -f "$1/etc/machine-id"; touch "$1/etc/machine-id"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook="copy-in $work/xnat-fleet-ssh-hostkeys.service /etc/systemd/system" \
    --customize-hook='systemctl --root="$1" enable --quiet xnat-fleet-ssh-hostkeys.service' \
    "$suite" "$work/root.tar" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"
  podman import --quiet \
    --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' \
    --change "LABEL xnat-fleet.recipe=$hash" --change 'STOPSIGNAL SIGRTMIN+3' \
    "$work/root.tar" "$image" >/dev/null
  podman rmi --force "$peer" >/dev/null 2>&1 || true
else
  echo "$image is current (recipe $hash)" >&2
fi

current=$(podman image inspect --format '{{ index .Labels "xnat-fleet.recipe" }}' "$peer" 2>/dev/null || true)
if [ "$current" != "$hash" ]; then
  echo "building $peer" >&2
  ctx=$(mktemp -d)
  cat > "$ctx/Containerfile" <<EOC
FROM $image
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-client netcat-openbsd python3-aiosmtpd sshpass openssl curl swaks ssh-audit \
    && rm -rf /var/lib/apt/lists/*
LABEL xnat-fleet.recipe=$hash
EOC
  podman build --quiet -t "$peer" "$ctx" >/dev/null
  rm -rf "$ctx"
fi
