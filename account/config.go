package account

import (
	"errors"
	"unicode/utf8"

	"github.com/bytemare/opaque"
)

// opaqueContext is the RFC 9807 §7 context string. It is authenticated in
// the key exchange transcript (RFC 9807 §6.4.2) without ever being sent,
// so a client and a server that disagree on the protocol, or a transcript
// replayed from another application of OPAQUE, fail to authenticate
// instead of silently interoperating (RFC 9807 §8, "Context information").
const opaqueContext = "qpc/1 account OPAQUE-3DH ristretto255-SHA512 Argon2id"

// Configuration returns the OPAQUE configuration of qpc accounts:
// opaque.DefaultConfiguration() (OPRF and 3DH over ristretto255, SHA-512
// for KDF, MAC and hash, Argon2id as the client's key stretching function)
// with qpc's context string. Client and server must call this same
// function: any difference makes every login fail. Each call returns a
// fresh value, so a caller cannot alter the configuration of another.
func Configuration() *opaque.Configuration {
	c := opaque.DefaultConfiguration()
	c.Context = []byte(opaqueContext)
	return c
}

// Sizes of the OPAQUE messages in Configuration(). With ristretto255
// (Noe = Npk = 32), SHA-512 (Nh = Nm = 64) and Nn = 32 (RFC 9807 §5.1,
// §6.1, §4.1.1). The body decoders demand these exact lengths, so a wrong
// size never reaches the OPAQUE library; the tests check them against the
// library's own serialisations.
const (
	RegistrationRequestSize  = 32                           // blinded_message
	RegistrationResponseSize = 32 + 32                      // evaluated_message, server_public_key
	RegistrationRecordSize   = 32 + 64 + (32 + 64)          // client_public_key, masking_key, envelope
	KE1Size                  = 32 + 32 + 32                 // blinded_message, client_nonce, client_public_keyshare
	KE2Size                  = 32 + 32 + 128 + 32 + 32 + 64 // evaluated_message, masking_nonce, masked_response, server_nonce, server_public_keyshare, server_mac
	KE3Size                  = 64                           // client_mac
)

// Other hard limits of the account bodies.
const (
	MinUsernameLen   = 3
	MaxUsernameLen   = 32
	DeviceIDSize     = 16
	MaxDeviceNameLen = 64 // bytes of UTF-8
	TokenSize        = 32 // session token
	// MaxDevices bounds the devices of one account, so that a DeviceList
	// always fits one record of a modest padding bucket.
	MaxDevices = 32
)

// DeviceID names a device of an account. The client chooses it at random
// when it first registers or logs in on a device and keeps it.
type DeviceID [DeviceIDSize]byte

// Token is a session token: 32 random bytes, the bearer credential of an
// account session. The server stores only its SHA-256.
type Token [TokenSize]byte

// Errors.
var (
	// ErrMalformed reports a body that does not decode, or a value outside
	// its limits.
	ErrMalformed = errors.New("account: malformed body")
	// ErrInvalidUsername reports a username outside the rules in the
	// package documentation.
	ErrInvalidUsername = errors.New("account: invalid username")
	// ErrLoginFailed reports that the server's KE2 did not authenticate
	// (RFC 9807 §6.4.3): a wrong password, an unregistered username, or a
	// server that is not the one the client registered with. The client
	// cannot tell these apart, by design (RFC 9807 §10.9).
	ErrLoginFailed = errors.New("account: login failed")
)

// NormalizeUsername folds ASCII upper case to lower case and checks the
// result against the username rules: 3..32 bytes of [a-z0-9._-]. The
// restricted alphabet avoids homoglyphs and Unicode normalisation
// entirely; the folding only forgives the shift key.
func NormalizeUsername(s string) (string, error) {
	if len(s) < MinUsernameLen || len(s) > MaxUsernameLen {
		return "", ErrInvalidUsername
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'A' && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return "", ErrInvalidUsername
		}
	}
	return string(b), nil
}

// validUsername reports whether s is already normalised; bodies carry only
// normalised usernames, so that each username has one encoding.
func validUsername(s string) bool {
	n, err := NormalizeUsername(s)
	return err == nil && n == s
}

// ValidDeviceName reports whether s is an acceptable device name: at most
// MaxDeviceNameLen bytes of valid UTF-8 without control characters. The
// name is shown in device lists, and a terminal escape in it must not
// reach another of the user's screens.
func ValidDeviceName(s string) bool {
	if len(s) > MaxDeviceNameLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7F && r < 0xA0) || r == 0x2028 || r == 0x2029 {
			return false
		}
	}
	return true
}
