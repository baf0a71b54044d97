package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
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

// Address names a server and the key it must present:
// qpc://<base64url SPKI SHA-256, unpadded>@host:port (docs/protocol.md §1).
type Address struct {
	Pin  [PinSize]byte
	Host string // host:port; an onion host always carries its port here
}

// Onion reports whether the host is a v3 onion service, reached only
// through Tor.
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

// PinSPKI returns the pin of a DER SubjectPublicKeyInfo.
func PinSPKI(spki []byte) [PinSize]byte { return sha256.Sum256(spki) }

func (a Address) String() string {
	host := a.Host
	if h, port, err := net.SplitHostPort(host); err == nil && port == OnionPort && IsOnionHost(h) {
		host = h
	}
	return "qpc://" + base64.RawURLEncoding.EncodeToString(a.Pin[:]) + "@" + host
}

// ParseAddress parses a qpc:// address. The host must carry a port,
// except a .onion host, whose port defaults to OnionPort.
func ParseAddress(s string) (Address, error) {
	rest, ok := strings.CutPrefix(s, "qpc://")
	if !ok {
		return Address{}, fmt.Errorf("%w: want qpc://<pin>@host:port", ErrBadAddress)
	}
	pin, host, ok := strings.Cut(rest, "@")
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
	if IsOnionHost(host) {
		host = net.JoinHostPort(strings.ToLower(host), OnionPort)
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil || h == "" || port == "" {
		return Address{}, fmt.Errorf("%w: host must be host:port", ErrBadAddress)
	}
	var a Address
	copy(a.Pin[:], raw)
	a.Host = host
	return a, nil
}
