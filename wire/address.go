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

// Address names a server and the key it must present:
// qpc://<base64url SPKI SHA-256, unpadded>@host:port (docs/protocol.md §1).
type Address struct {
	Pin  [PinSize]byte
	Host string // host:port
}

// PinSPKI returns the pin of a DER SubjectPublicKeyInfo.
func PinSPKI(spki []byte) [PinSize]byte { return sha256.Sum256(spki) }

func (a Address) String() string {
	return "qpc://" + base64.RawURLEncoding.EncodeToString(a.Pin[:]) + "@" + a.Host
}

// ParseAddress parses a qpc:// address. The host must carry a port.
func ParseAddress(s string) (Address, error) {
	rest, ok := strings.CutPrefix(s, "qpc://")
	if !ok {
		return Address{}, fmt.Errorf("%w: want qpc://<pin>@host:port", ErrBadAddress)
	}
	pin, host, ok := strings.Cut(rest, "@")
	if !ok {
		return Address{}, fmt.Errorf("%w: missing @ between pin and host", ErrBadAddress)
	}
	raw, err := base64.RawURLEncoding.DecodeString(pin)
	if err != nil || len(raw) != PinSize {
		return Address{}, fmt.Errorf("%w: pin is not %d bytes of unpadded base64url", ErrBadAddress, PinSize)
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
