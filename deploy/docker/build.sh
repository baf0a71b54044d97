#!/usr/bin/env bash
# Builds the qpc-server container image (deploy/docker/Dockerfile) with
# nothing pulled and no daemon: the static binary is compiled here
# (CGO_ENABLED=0, as deploy/cross.sh does it) and copied onto an empty
# (scratch) base with the account files of deploy/docker/rootfs.
#
#   deploy/docker/build.sh [TAG]     default TAG: qpc-server
#
#   QPC_CONTAINER=podman|buildah|docker   the builder (default: the first of
#                                         them found, in that order)
#   QPC_VERSION=1.2.3                     the version compiled in (default devel)
#   QPC_IMAGE_ARCH=arm64                  GOARCH of the image (default: the host's)
#
# `just image` (.ci/image) builds it this way, then runs and checks it.
set -euo pipefail

tag=${1:-qpc-server}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

source deploy/docker/lib.sh
pick_builder build.sh
arch=${QPC_IMAGE_ARCH:-$(go env GOARCH)}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# The build context the Dockerfile reads:
#   rootfs/         etc/passwd, etc/group (the qpc user, 10001:10001),
#                   usr/bin/qpc-server, an empty var/lib: owned by root
#   varlib/qpc/     the data directory, mode 0700; the Dockerfile copies
#                   varlib/ so that the directory itself keeps its mode
#                   and is the only thing owned by qpc
cp -R deploy/docker/rootfs "$ctx/rootfs"
chmod 0644 "$ctx/rootfs/etc/passwd" "$ctx/rootfs/etc/group"
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/var/lib" "$ctx/varlib/qpc"
chmod 0700 "$ctx/varlib/qpc"
bash deploy/cross.sh "$ctx/bin" "linux/$arch" >/dev/null
mv "$ctx/bin/qpc-server-linux-$arch" "$ctx/rootfs/usr/bin/qpc-server"
rmdir "$ctx/bin"

build_image deploy/docker/Dockerfile "$tag" "$ctx" --platform "linux/$arch"
echo "built image $tag with $builder (linux/$arch)"
