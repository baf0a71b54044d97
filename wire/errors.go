package wire

import (
	"errors"
	"fmt"
)

// Code is a numeric error code carried in an Error record
// (docs/protocol.md §6).
type Code uint16

// Error codes. Their numbers are part of the protocol: never renumber.
const (
	CodeProtocol     Code = 1  // malformed record or message
	CodeVersion      Code = 2  // no common protocol version
	CodeUnknownKind  Code = 3  // record kind unknown or not allowed here
	CodeTooLarge     Code = 4  // a length exceeds a limit
	CodeUnauthorized Code = 5  // bad or missing mailbox signature
	CodeNotFound     Code = 6  // no such mailbox
	CodeQuota        Code = 7  // mailbox quota full
	CodeRateLimited  Code = 8  // too many requests
	CodeInternal     Code = 9  // server fault; retry later
	CodeUnavailable  Code = 10 // shutting down or storage unavailable; retry later
	CodeForbidden    Code = 11 // the authorization hook refused (token missing or spent)
	CodeExists       Code = 12 // mailbox ID collision
	CodeTokenMissing Code = 13 // the server requires a token and none (or no parseable one) came
	CodeTokenInvalid Code = 14 // forged, or issued under another key
	CodeTokenSpent   Code = 15 // the token was already redeemed
	CodeTokenExpired Code = 16 // the token's epoch is no longer accepted
	CodeAuth         Code = 17 // login failed, or the session is unknown, revoked or expired
	CodeTaken        Code = 18 // the username is registered already
	CodeTooMany      Code = 19 // too many devices on the account
)

var codeNames = map[Code]string{
	CodeProtocol:     "PROTOCOL",
	CodeVersion:      "VERSION",
	CodeUnknownKind:  "UNKNOWN_KIND",
	CodeTooLarge:     "TOO_LARGE",
	CodeUnauthorized: "UNAUTHORIZED",
	CodeNotFound:     "NOT_FOUND",
	CodeQuota:        "QUOTA",
	CodeRateLimited:  "RATE_LIMITED",
	CodeInternal:     "INTERNAL",
	CodeUnavailable:  "UNAVAILABLE",
	CodeForbidden:    "FORBIDDEN",
	CodeExists:       "EXISTS",
	CodeTokenMissing: "TOKEN_MISSING",
	CodeTokenInvalid: "TOKEN_INVALID",
	CodeTokenSpent:   "TOKEN_SPENT",
	CodeTokenExpired: "TOKEN_EXPIRED",
	CodeAuth:         "AUTH",
	CodeTaken:        "TAKEN",
	CodeTooMany:      "TOO_MANY",
}

func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CODE_%d", uint16(c))
}

// Retryable reports whether a client may retry the same request later.
func (c Code) Retryable() bool {
	return c == CodeInternal || c == CodeUnavailable || c == CodeRateLimited
}

// Error is a protocol error: what the peer receives in an Error record and
// what decoders return for bad input.
type Error struct {
	Code   Code
	Detail string // human-readable; never contains identifiers
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "qpc: " + e.Code.String()
	}
	return "qpc: " + e.Code.String() + ": " + e.Detail
}

// Is matches any *Error with the same code, so errors.Is(err,
// &wire.Error{Code: wire.CodeQuota}) works across wrapping.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Errorf builds an *Error with a formatted detail.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of the first *Error in err's chain, and false if
// there is none.
func CodeOf(err error) (Code, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Code, true
	}
	return 0, false
}
