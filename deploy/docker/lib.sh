# shellcheck shell=bash
# What deploy/docker/build.sh and deploy/docker/tor/build.sh share,
# sourced by both: choosing the image builder and running it on a staged
# build context. Nothing is pulled; the Dockerfiles start from scratch.

# pick_builder NAME sets builder to $QPC_CONTAINER, or else to the first of
# podman, buildah and docker installed; NAME (the calling script) starts
# the error if there is none.
pick_builder() {
	builder=${QPC_CONTAINER:-}
	if [[ -z $builder ]]; then
		local b
		for b in podman buildah docker; do
			if command -v "$b" >/dev/null; then
				builder=$b
				break
			fi
		done
	fi
	[[ -n $builder ]] || {
		echo "$1: no podman, buildah or docker found (Debian: apt-get install podman)" >&2
		exit 1
	}
}

# build_image DOCKERFILE TAG CONTEXT [BUILD-ARGS...] builds CONTEXT into
# image TAG with $builder (buildah without intermediate layers).
build_image() {
	local file=$1 tag=$2 ctx=$3
	shift 3
	case $builder in
	buildah) buildah build --layers=false -f "$file" "$@" -t "$tag" "$ctx" ;;
	*) "$builder" build -f "$file" "$@" -t "$tag" "$ctx" ;;
	esac
}
