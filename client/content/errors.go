package content

import (
	"errors"
	"fmt"
)

var (
	// ErrMalformed is wrapped by every error for content that does not
	// follow docs/protocol.md §11: truncated, trailing bytes, a length or
	// value outside its limits, an unknown kind.
	ErrMalformed = errors.New("content: malformed")
	// ErrVersion is wrapped by the error for a version byte other than
	// Version. It does not wrap ErrMalformed: the content may be well
	// formed for a newer client.
	ErrVersion = errors.New("content: unsupported version")
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}
