#!/usr/bin/env bash
# Builds the tor image of deploy/docker/compose.yml (deploy/docker/tor/
# Dockerfile) with nothing pulled: Debian's tor of this machine and the
# shared libraries ldd lists for it, on a scratch base.
#
#   deploy/docker/tor/build.sh [TAG]     default TAG: qpc-tor
#
#   QPC_CONTAINER=podman|buildah|docker  the builder (default: the first found)
set -euo pipefail

tag=${1:-qpc-tor}
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

source deploy/docker/lib.sh
pick_builder tor/build.sh
tor=$(command -v tor) || {
	echo "tor/build.sh: tor is not installed here (Debian: apt-get install tor)" >&2
	exit 1
}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/bin" "$root/etc/tor" "$root/var/lib" "$root/run" \
	"$ctx/state/var/lib/tor-qpc" "$ctx/state/run/tor-qpc"
chmod 0700 "$ctx/state/var/lib/tor-qpc" "$ctx/state/run/tor-qpc"
cp "$tor" "$root/usr/bin/tor"
# Every library ldd resolves, and the loader, at the path it names.
libs=$(ldd "$tor" | grep -o '/[^ ]*') || {
	echo "tor/build.sh: ldd $tor found no libraries" >&2
	exit 1
}
for lib in $libs; do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
install -m 0644 deploy/docker/tor/torrc "$root/etc/tor/torrc"
echo 'tor-qpc:x:10001:10001:tor for quicprochat:/var/lib/tor-qpc:/nonexistent' >"$root/etc/passwd"
echo 'tor-qpc:x:10001:' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

build_image deploy/docker/tor/Dockerfile "$tag" "$ctx"
echo "built image $tag with $builder ($("$tor" --version | head -n 1))"
