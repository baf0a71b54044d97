#!/usr/bin/env bash
# Copies node 1's key set into nodes 2 and 3 of deploy/compose/compose.yml
# before they start for the first time, so that the three nodes present
# one server: one pin (tls.key), one OPAQUE key (opaque.key), one token
# secret (tokens.key) and one KT key pair (kt-note.key, kt-vrf.key).
#
# Run from deploy/compose/ after `compose up -d postgres qpc-1` printed
# node 1's address, and before the first `compose up -d` of the others:
#
#   ./share-keys.sh
#
#   QPC_CONTAINER=podman|docker   the container engine (default: the first found)
#   COMPOSE="docker compose"      the compose command (default: podman-compose
#                                 with podman, else docker compose)
#
# The images have no shell, so the files go through the engine's cp, as a
# tar stream owned by the qpc user (10001), mode 0600. Nothing is
# overwritten: a node that already has a tls.key is refused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

engine=${QPC_CONTAINER:-}
if [[ -z $engine ]]; then
	for e in podman docker; do
		if command -v "$e" >/dev/null; then
			engine=$e
			break
		fi
	done
fi
[[ -n $engine ]] || {
	echo "share-keys.sh: neither podman nor docker is installed" >&2
	exit 1
}
if [[ -z ${COMPOSE:-} ]]; then
	if [[ $engine == podman ]]; then COMPOSE=podman-compose; else COMPOSE="docker compose"; fi
fi

keys=(tls.key opaque.key tokens.key kt-note.key kt-vrf.key)

# container SERVICE: the container of a compose service, by the label both
# docker compose and podman-compose set.
container() {
	local name
	name=$("$engine" ps -a --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -n 1)
	[[ -n $name ]] || {
		echo "share-keys.sh: no container for service $1 (run: $COMPOSE up -d postgres qpc-1)" >&2
		exit 1
	}
	echo "$name"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$(container qpc-1)
for k in "${keys[@]}"; do
	"$engine" cp "$src:/var/lib/qpc/$k" "$tmp/$k" || {
		echo "share-keys.sh: $src has no /var/lib/qpc/$k yet: wait for its address: line" >&2
		exit 1
	}
done
chmod 0600 "$tmp"/*.key

# The other nodes' containers exist (created, not started) so that their
# volumes do.
$COMPOSE up --no-start qpc-2 qpc-3
for svc in qpc-2 qpc-3; do
	dst=$(container "$svc")
	if "$engine" cp "$dst:/var/lib/qpc/tls.key" "$tmp/existing" 2>/dev/null; then
		echo "share-keys.sh: $svc already has a tls.key; not overwriting it" >&2
		exit 1
	fi
	tar -C "$tmp" --owner=10001 --group=10001 --numeric-owner -cf - "${keys[@]}" |
		"$engine" cp -a - "$dst:/var/lib/qpc"
	echo "copied ${keys[*]} from $src to $dst"
done
