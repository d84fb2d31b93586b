#!/usr/bin/env bash
# Make the local base image localhost/debian:bookworm from Debian's packages, without an image
# registry (debootstrap reaches the Debian mirror only). Skipped when the image exists.
#   docker/base-image.sh [--help] [IMAGE]
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
IMAGE=${1:-localhost/debian:bookworm}
P=${PODMAN:-podman}
if $P image exists "$IMAGE"; then
  echo "base image $IMAGE already exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
ROOT=$(mktemp -d /tmp/tagger-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase bookworm "$ROOT" >"$ROOT.log" 2>&1 || { tail -5 "$ROOT.log" >&2; exit 1; }
rm -f "$ROOT.log"
# debootstrap leaves its package cache behind; the image does not need it
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | $P import --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "base image $IMAGE made from Debian bookworm"
