package padding

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Limits on any policy (docs/protocol.md §3). The smallest bucket holds a
// whole handshake record; the largest keeps a single record cheap to
// buffer and well inside the u24 record length.
const (
	MinBucket  = 512
	MaxBucket  = 1 << 20
	MaxBuckets = 8
)

// Errors returned by this package.
var (
	ErrBadPolicy = errors.New("padding: invalid bucket policy")
	ErrTooLarge  = errors.New("padding: larger than the largest bucket")
	ErrBadPad    = errors.New("padding: malformed padded payload")
)

// Policy is an ascending list of bucket sizes in bytes.
type Policy struct {
	buckets []int
}

// V1 is the first default policy: one control bucket and three envelope
// buckets. A client state that pinned no policy explicitly (made before
// the pin was written at Init) pins V1, what the default was then.
var V1 = Policy{buckets: []int{512, 2 << 10, 16 << 10, 128 << 10}}

// V2 adds a 4 KiB bucket to V1 (docs/adr/0018-buckets.md). A message pays
// about 1.8 KiB before its text (token, X-Wing sealing, sender block, MLS
// framing and signature, content header, KT checkpoint), so under V1 a
// text of more than about 210 bytes travelled in a 16 KiB record; under
// V2 texts up to about 2.2 KiB, and mailbox announcements, travel in
// 4 KiB. The control bucket, the smallest envelope bucket and the largest
// bucket are V1's, so the largest envelope is unchanged.
var V2 = Policy{buckets: []int{512, 2 << 10, 4 << 10, 16 << 10, 128 << 10}}

// Default is the policy a server announces unless configured otherwise,
// and the one a new client pins when not told another.
var Default = V2

// Control is the policy of the handshake: every hello record is exactly
// 512 bytes, before either side knows the server's policy.
var Control = Policy{buckets: []int{MinBucket}}

// NewPolicy validates sizes and returns a policy. Sizes must be strictly
// ascending, between MinBucket and MaxBucket, and at most MaxBuckets long.
func NewPolicy(sizes ...int) (Policy, error) {
	if len(sizes) == 0 || len(sizes) > MaxBuckets {
		return Policy{}, fmt.Errorf("%w: %d buckets (want 1 to %d)", ErrBadPolicy, len(sizes), MaxBuckets)
	}
	for i, s := range sizes {
		if s < MinBucket || s > MaxBucket {
			return Policy{}, fmt.Errorf("%w: bucket %d is outside %d..%d", ErrBadPolicy, s, MinBucket, MaxBucket)
		}
		if i > 0 && s <= sizes[i-1] {
			return Policy{}, fmt.Errorf("%w: buckets must be strictly ascending", ErrBadPolicy)
		}
	}
	return Policy{buckets: slices.Clone(sizes)}, nil
}

// Buckets returns a copy of the bucket sizes.
func (p Policy) Buckets() []int { return slices.Clone(p.buckets) }

// Max is the largest bucket, or 0 for the zero Policy.
func (p Policy) Max() int {
	if len(p.buckets) == 0 {
		return 0
	}
	return p.buckets[len(p.buckets)-1]
}

// Bucket returns the smallest bucket that holds n bytes.
func (p Policy) Bucket(n int) (int, error) {
	for _, b := range p.buckets {
		if n <= b {
			return b, nil
		}
	}
	return 0, fmt.Errorf("%w: %d bytes, largest bucket %d", ErrTooLarge, n, p.Max())
}

// IsBucket reports whether n is exactly one of the policy's sizes.
func (p Policy) IsBucket(n int) bool {
	_, found := slices.BinarySearch(p.buckets, n)
	return found
}

// Equal reports whether two policies have the same buckets.
func (p Policy) Equal(q Policy) bool { return slices.Equal(p.buckets, q.buckets) }

// String formats the policy as "512,2048,...".
func (p Policy) String() string {
	s := ""
	for i, b := range p.buckets {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(b)
	}
	return s
}

// ParsePolicy reads a policy in the form String writes: the bucket sizes
// in bytes, decimal, ascending, separated by commas ("512,2048,16384").
// Spaces around the sizes are allowed. The result passes NewPolicy's
// checks.
//
// A client pins the policy it expects from its server in this form
// (docs/protocol.md §3.1): it is short enough for an invite or a QR code.
func ParsePolicy(s string) (Policy, error) {
	fields := strings.Split(s, ",")
	if len(fields) > MaxBuckets {
		return Policy{}, fmt.Errorf("%w: %d buckets (want 1 to %d)", ErrBadPolicy, len(fields), MaxBuckets)
	}
	sizes := make([]int, 0, len(fields))
	for _, f := range fields {
		f = strings.TrimSpace(f)
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return Policy{}, fmt.Errorf("%w: %q is not a size in bytes", ErrBadPolicy, f)
		}
		sizes = append(sizes, int(n))
	}
	return NewPolicy(sizes...)
}

// IsZero reports whether p is the zero Policy (no buckets), which is not
// a valid policy: APIs use it for "not set".
func (p Policy) IsZero() bool { return len(p.buckets) == 0 }

// MarshalText is String; the zero Policy encodes as "".
func (p Policy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText is ParsePolicy; "" decodes to the zero Policy.
func (p *Policy) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*p = Policy{}
		return nil
	}
	q, err := ParsePolicy(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}
