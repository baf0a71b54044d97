package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
)

// ALPN is the TLS application protocol of version 1 (docs/protocol.md §1).
const ALPN = "qpc/1"

// PinSize is the size of a server pin: SHA-256 of the certificate's
// SubjectPublicKeyInfo.
const PinSize = sha256.Size

// ErrBadAddress is returned for a server address that does not parse.
var ErrBadAddress = errors.New("invalid server address")

// OnionPort is the port of an onion address written without one
// (docs/protocol.md §1.1): qpc://<pin>@<56 characters>.onion.
const OnionPort = "4433"

// MaxEndpoints bounds the endpoints of one address (docs/protocol.md §1):
// enough for every node of a deployment, few enough that a pasted
// address costs nothing to parse or to try in turn.
const MaxEndpoints = 16

// Address names a server and the key it must present:
// qpc://<base64url SPKI SHA-256, unpadded>@host:port (docs/protocol.md §1),
// or, for a server run as several nodes that present the one key,
// qpc://<pin>@host1:port,host2:port,... (at most MaxEndpoints).
type Address struct {
	Pin  [PinSize]byte
	Host string // the first endpoint, host:port; an onion host always carries its port here
	// More are the endpoints after Host, in the order written; nil for
	// the single form.
	More []string
}

// Hosts returns every endpoint, Host first.
func (a Address) Hosts() []string {
	return append([]string{a.Host}, a.More...)
}

// Endpoints returns one single-endpoint Address per endpoint, in order.
func (a Address) Endpoints() []Address {
	hosts := a.Hosts()
	out := make([]Address, len(hosts))
	for i, h := range hosts {
		out[i] = Address{Pin: a.Pin, Host: h}
	}
	return out
}

// AnyOnion reports whether any endpoint is a v3 onion service.
func (a Address) AnyOnion() bool {
	for _, e := range a.Endpoints() {
		if e.Onion() {
			return true
		}
	}
	return false
}

// Onion reports whether the (first) host is a v3 onion service, reached
// only through Tor.
func (a Address) Onion() bool {
	h, _, err := net.SplitHostPort(a.Host)
	return err == nil && IsOnionHost(h)
}

// IsOnionHost reports whether host (no port) is a v3 .onion name: 56
// base32 characters (RFC 4648, lower case) and ".onion".
func IsOnionHost(host string) bool {
	id, ok := strings.CutSuffix(strings.ToLower(host), ".onion")
	if !ok || len(id) != 56 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// inOnionDomain reports whether host (no port) is a name under .onion
// (RFC 7686) in any spelling: any case, with or without a trailing dot.
func inOnionDomain(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	return h == "onion" || strings.HasSuffix(h, ".onion")
}

// PinSPKI returns the pin of a DER SubjectPublicKeyInfo.
func PinSPKI(spki []byte) [PinSize]byte { return sha256.Sum256(spki) }

func (a Address) String() string {
	hosts := a.Hosts()
	for i, host := range hosts {
		if h, port, err := net.SplitHostPort(host); err == nil && port == OnionPort && IsOnionHost(h) {
			hosts[i] = h
		}
	}
	return "qpc://" + base64.RawURLEncoding.EncodeToString(a.Pin[:]) + "@" + strings.Join(hosts, ",")
}

// ParseAddress parses a qpc:// address. Every host must carry a port,
// except a .onion host, whose port defaults to OnionPort. Several
// endpoints are separated by commas: at most MaxEndpoints, none empty,
// none twice (an address has one spelling per endpoint list).
func ParseAddress(s string) (Address, error) {
	rest, ok := strings.CutPrefix(s, "qpc://")
	if !ok {
		return Address{}, fmt.Errorf("%w: want qpc://<pin>@host:port", ErrBadAddress)
	}
	pin, hostList, ok := strings.Cut(rest, "@")
	if !ok {
		return Address{}, fmt.Errorf("%w: missing @ between pin and host", ErrBadAddress)
	}
	// Canonical only: one pin has exactly one spelling (no stray trailing
	// bits, no newlines, which the decoder alone would skip), so addresses
	// compare as strings.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(pin)
	if err != nil || len(raw) != PinSize || base64.RawURLEncoding.EncodeToString(raw) != pin {
		return Address{}, fmt.Errorf("%w: pin is not %d bytes of unpadded base64url", ErrBadAddress, PinSize)
	}
	// Count before splitting: a pasted list of a million commas costs no
	// more than its length.
	if n := strings.Count(hostList, ",") + 1; n > MaxEndpoints {
		return Address{}, fmt.Errorf("%w: %d endpoints, at most %d", ErrBadAddress, n, MaxEndpoints)
	}
	var a Address
	copy(a.Pin[:], raw)
	for i, host := range strings.Split(hostList, ",") {
		if IsOnionHost(host) {
			host = net.JoinHostPort(host, OnionPort)
		}
		h, port, err := net.SplitHostPort(host)
		if err != nil || h == "" || port == "" {
			return Address{}, fmt.Errorf("%w: endpoint %d: host must be host:port", ErrBadAddress, i+1)
		}
		if strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			// No resolver takes such a name; a space after a comma is a
			// slip of whoever wrote the list.
			return Address{}, fmt.Errorf("%w: endpoint %d: space or control character", ErrBadAddress, i+1)
		}
		if !IsOnionHost(h) && inOnionDomain(h) {
			// Tor takes a subdomain of an onion (and the resolver a
			// trailing dot) for the onion itself: as a clearnet host it
			// would be dialled without Tor.
			return Address{}, fmt.Errorf("%w: endpoint %d: a name in .onion must be a v3 onion service, <56 characters>.onion", ErrBadAddress, i+1)
		}
		if IsOnionHost(h) {
			// One spelling per onion, as String writes it back.
			host = net.JoinHostPort(strings.ToLower(h), port)
		}
		if i == 0 {
			a.Host = host
			continue
		}
		if slices.Contains(a.Hosts(), host) {
			return Address{}, fmt.Errorf("%w: endpoint %d repeats an earlier one", ErrBadAddress, i+1)
		}
		a.More = append(a.More, host)
	}
	return a, nil
}
