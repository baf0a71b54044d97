package sealed

import (
	"errors"
	"fmt"
)

// Code is the numeric reason an envelope was refused. Codes are local to the
// recipient (the server never opens envelopes), but they are part of the
// format's specification (docs/protocol.md §7): never renumber.
type Code uint8

// Error codes.
const (
	CodeVersion   Code = 1 // envelope version byte is not 1
	CodeSuite     Code = 2 // KEM, KDF or AEAD ID is not the v1 suite, or not the recipient key's KEM
	CodeMalformed Code = 3 // truncated, oversized, bad padding, bad encoding, bad limits
	CodeDecrypt   Code = 4 // HPKE decapsulation or AEAD open failed (tampered, or sealed to another mailbox)
	CodeSignature Code = 5 // the sender's Ed25519 signature does not verify
	CodeReflected Code = 6 // the sender is one of the recipient's own identity keys
	CodeStale     Code = 7 // the sender's timestamp is outside the accepted window
	CodeTooLarge  Code = 8 // Seal: content exceeds MaxContent, or no bucket of the policy holds it
)

var codeNames = map[Code]string{
	CodeVersion:   "VERSION",
	CodeSuite:     "SUITE",
	CodeMalformed: "MALFORMED",
	CodeDecrypt:   "DECRYPT",
	CodeSignature: "SIGNATURE",
	CodeReflected: "REFLECTED",
	CodeStale:     "STALE",
	CodeTooLarge:  "TOO_LARGE",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", uint8(c))
}

// Error is what Seal and Open return on failure. errors.Is matches any
// *Error with the same Code, so errors.Is(err, sealed.ErrStale) works
// whatever the detail.
type Error struct {
	Code   Code
	Detail string // never contains keys, handles or content
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "sealed: " + e.Code.String()
	}
	return "sealed: " + e.Code.String() + ": " + e.Detail
}

// Is matches any *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrVersion   = &Error{Code: CodeVersion}
	ErrSuite     = &Error{Code: CodeSuite}
	ErrMalformed = &Error{Code: CodeMalformed}
	ErrDecrypt   = &Error{Code: CodeDecrypt}
	ErrSignature = &Error{Code: CodeSignature}
	ErrReflected = &Error{Code: CodeReflected}
	ErrStale     = &Error{Code: CodeStale}
	ErrTooLarge  = &Error{Code: CodeTooLarge}
)

// CodeOf returns the Code of the first *Error in err's chain, or 0.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Detail: fmt.Sprintf(format, args...)}
}
