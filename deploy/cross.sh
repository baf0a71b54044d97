#!/usr/bin/env bash
# Cross-compiles static qpc-server binaries (CGO_ENABLED=0) for routers and
# desktops: `just cross`, or deploy/cross.sh OUTDIR [os/arch ...].
# Works offline once the modules are in the module cache.
#
#   linux/arm   GOARM=7 (armv7, hard float; QPC_GOARM=5 or 6 for older)
#   linux/mips, linux/mipsle   GOMIPS=softfloat (router SoCs have no FPU)
#
# Output: OUTDIR/qpc-server-<os>-<arch>[.exe]. Each build's version comes
# from QPC_VERSION (default: devel).
set -euo pipefail

out=${1:?usage: deploy/cross.sh OUTDIR [os/arch ...]}
shift
targets=("$@")
if ((${#targets[@]} == 0)); then
	# No windows/amd64: the key-transparency log is stored with Tessera's
	# POSIX driver (storage/posix: fcntl locks, O_DIRECTORY), which does
	# not build for Windows. The server runs on Unix-likes only.
	targets=(linux/amd64 linux/arm64 linux/arm linux/mipsle linux/mips
		darwin/amd64 darwin/arm64 freebsd/amd64)
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)

# github.com/bytemare/ksf v0.5.0 does not compile for 32-bit targets: two
# fmt.Errorf calls pass the untyped constant math.MaxUint32, which becomes
# an int and overflows there. No fixed release is available, so 32-bit
# builds use a temporary copy of go.mod that replaces the module with a
# copy of it whose two constants are typed uint64 (the messages are
# unchanged). The copy is made from the module cache, so it only ever
# differs by that cast; if upstream changes the lines, the sed finds
# nothing and this script stops. The repository's go.mod is not touched.
modfile="" tmp=""
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT
ksf_modfile() {
	[[ -n $modfile ]] && return
	local dir
	dir=$(go list -m -f '{{.Dir}}' github.com/bytemare/ksf)
	tmp=$(mktemp -d)
	cp -R "$dir" "$tmp/ksf"
	chmod -R u+w "$tmp/ksf"
	sed -i 's/ErrParameterValue, math\.MaxUint32)/ErrParameterValue, uint64(math.MaxUint32))/' "$tmp/ksf/argon2id/argon2.go"
	if [[ $(grep -c 'uint64(math.MaxUint32))' "$tmp/ksf/argon2id/argon2.go") != 2 ]]; then
		echo "cross: the ksf 32-bit patch no longer applies to $dir; check whether it is still needed" >&2
		exit 1
	fi
	cp go.mod "$tmp/go.mod"
	cp go.sum "$tmp/go.sum"
	echo "replace github.com/bytemare/ksf => $tmp/ksf" >>"$tmp/go.mod"
	modfile=$tmp/go.mod
}

for t in "${targets[@]}"; do
	os=${t%/*} arch=${t#*/}
	name=qpc-server-$os-$arch
	[[ $os == windows ]] && name+=.exe
	flags=()
	case $arch in
	arm | 386 | mips | mipsle)
		ksf_modfile
		flags+=(-modfile "$modfile")
		;;
	esac
	start=$SECONDS
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOARM=${QPC_GOARM:-7} GOMIPS=softfloat \
		go build -trimpath -buildvcs=false "${flags[@]}" \
		-ldflags "-s -w -X main.version=${QPC_VERSION:-devel}" \
		-o "$out/$name" ./cmd/qpc-server
	echo "built $out/$name ($((SECONDS - start))s)"
done
