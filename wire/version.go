package wire

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Protocol versions (docs/protocol.md §10, docs/compatibility.md). Each
// version N has its own ALPN identifier "qpc/N". A server accepts at most
// two versions at once, N and N-1; a client offers every version it
// speaks, and both sides settle on the highest common one, in TLS (ALPN)
// and again in the hello, which must agree.

// SupportedVersions returns the versions this build speaks, newest first.
func SupportedVersions() []uint16 { return []uint16{ProtocolVersion} }

// alpnPrefix starts every ALPN identifier: "qpc/" + the decimal version.
const alpnPrefix = "qpc/"

// ALPNFor is the ALPN identifier of version v.
func ALPNFor(v uint16) string { return alpnPrefix + strconv.Itoa(int(v)) }

// ALPNs lists the ALPN identifiers of versions, in the same order.
func ALPNs(versions []uint16) []string {
	out := make([]string, len(versions))
	for i, v := range versions {
		out[i] = ALPNFor(v)
	}
	return out
}

// ParseALPN returns the version of an ALPN identifier "qpc/N".
func ParseALPN(s string) (uint16, bool) {
	rest, ok := strings.CutPrefix(s, alpnPrefix)
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 10, 16)
	if err != nil || v == 0 {
		return 0, false
	}
	return uint16(v), true
}

// Negotiate returns the highest version in both lists.
func Negotiate(ours, theirs []uint16) (uint16, bool) {
	var best uint16
	found := false
	for _, v := range ours {
		if slices.Contains(theirs, v) && (!found || v > best) {
			best, found = v, true
		}
	}
	return best, found
}

// CheckVersionWindow checks a server's list of accepted versions: not
// empty, newest first, no version 0, and no more than N and N-1.
func CheckVersionWindow(versions []uint16) error {
	switch {
	case len(versions) == 0:
		return errors.New("no protocol versions")
	case len(versions) > 2:
		return fmt.Errorf("versions %v: a server accepts at most N and N-1", versions)
	case slices.Contains(versions, 0):
		return errors.New("protocol version 0 does not exist")
	case len(versions) == 2 && versions[1] != versions[0]-1:
		return fmt.Errorf("versions %v: want N, N-1 (newest first)", versions)
	}
	return nil
}
