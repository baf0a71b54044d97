package mls

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Variable-length vectors, RFC 9420 §2.1.2.
//
// The length prefix is a QUIC-style varint limited to 30 bits: the top two
// bits of the first byte select a 1-, 2- or 4-byte encoding, and 0b11 is
// reserved. MLS requires the shortest encoding, so a longer-than-needed
// prefix is rejected as malformed.

// maxVectorLen is the largest length a varint prefix can express (2^30 - 1).
const maxVectorLen = 1<<30 - 1

// ErrMalformed is returned (wrapped) by every decoder for input that does
// not parse as the expected structure.
var ErrMalformed = errors.New("mls: malformed encoding")

// readVarint reads a varint length prefix (RFC 9420 §2.1.2), rejecting the
// reserved 0b11 prefix and non-minimal encodings.
func readVarint(s *cryptobyte.String) (uint32, bool) {
	var first uint8
	if !s.ReadUint8(&first) {
		return 0, false
	}
	switch first >> 6 {
	case 0:
		return uint32(first & 0x3f), true
	case 1:
		var b uint8
		if !s.ReadUint8(&b) {
			return 0, false
		}
		v := uint32(first&0x3f)<<8 | uint32(b)
		if v < 1<<6 {
			return 0, false
		}
		return v, true
	case 2:
		var rest [3]byte
		if !s.CopyBytes(rest[:]) {
			return 0, false
		}
		v := uint32(first&0x3f)<<24 | uint32(rest[0])<<16 | uint32(rest[1])<<8 | uint32(rest[2])
		if v < 1<<14 {
			return 0, false
		}
		return v, true
	default:
		return 0, false
	}
}

// addVarint appends n as a minimal varint length prefix. n must not exceed
// maxVectorLen; larger values set an error on the builder.
func addVarint(b *cryptobyte.Builder, n int) {
	switch {
	case n < 0 || n > maxVectorLen:
		b.SetError(errors.New("mls: vector too long"))
	case n < 1<<6:
		b.AddUint8(uint8(n))
	case n < 1<<14:
		b.AddUint16(uint16(n) | 0x4000)
	default:
		b.AddUint32(uint32(n) | 0x80000000)
	}
}

// readVector reads a varint-prefixed vector into out without copying.
func readVector(s *cryptobyte.String, out *cryptobyte.String) bool {
	n, ok := readVarint(s)
	if !ok {
		return false
	}
	var body []byte
	if !s.ReadBytes(&body, int(n)) {
		return false
	}
	*out = body
	return true
}

// readOpaque reads a varint-prefixed opaque<V> and copies it into *out.
// An empty vector decodes to an empty, non-nil slice only if it was non-nil
// before; callers compare with len, not with nil.
func readOpaque(s *cryptobyte.String, out *[]byte) bool {
	var v cryptobyte.String
	if !readVector(s, &v) {
		return false
	}
	*out = append([]byte(nil), v...)
	return true
}

// addOpaque appends data as a varint-prefixed opaque<V>.
func addOpaque(b *cryptobyte.Builder, data []byte) {
	addVarint(b, len(data))
	b.AddBytes(data)
}

// addVector appends a varint-prefixed vector whose body is built by f.
func addVector(b *cryptobyte.Builder, f func(*cryptobyte.Builder)) {
	var child cryptobyte.Builder
	f(&child)
	body, err := child.Bytes()
	if err != nil {
		b.SetError(err)
		return
	}
	addOpaque(b, body)
}

// readOptional reads an optional<T> presence byte (RFC 9420 §2.1.3): 0 for
// absent, 1 for present; anything else is malformed.
func readOptional(s *cryptobyte.String, present *bool) bool {
	var v uint8
	if !s.ReadUint8(&v) || v > 1 {
		return false
	}
	*present = v == 1
	return true
}

// addOptional appends an optional<T> presence byte.
func addOptional(b *cryptobyte.Builder, present bool) {
	if present {
		b.AddUint8(1)
	} else {
		b.AddUint8(0)
	}
}

// Whole structures and lists of them (RFC 9420 §2.1): the helpers every
// marshal and unmarshal function in the package is built from.

// errInvalid is set on a builder when a structure cannot be encoded because
// its fields contradict each other (for example a content type with no
// matching body); such a value could never have come out of a decoder.
var errInvalid = errors.New("mls: invalid structure for encoding")

// invalidf reports a structure that cannot be encoded.
func invalidf(b *cryptobyte.Builder, format string, args ...any) {
	b.SetError(fmt.Errorf("%w: "+format, append([]any{errInvalid}, args...)...))
}

// encode runs a marshal function on a fresh builder.
func encode(name string, f func(*cryptobyte.Builder)) ([]byte, error) {
	var b cryptobyte.Builder
	f(&b)
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// decodeAll runs an unmarshal function over data and requires it to consume
// every byte: MLS structures are never followed by slack.
func decodeAll(name string, data []byte, f func(*cryptobyte.String) bool) error {
	s := cryptobyte.String(data)
	if !f(&s) || !s.Empty() {
		return fmt.Errorf("%s: %w", name, ErrMalformed)
	}
	return nil
}

// readList decodes a varint-prefixed vector whose elements are parsed by
// elem until the vector body is exhausted. An element parser that fails, or
// one that leaves a partial element, makes the whole vector malformed.
func readList(s *cryptobyte.String, elem func(*cryptobyte.String) bool) bool {
	var v cryptobyte.String
	if !readVector(s, &v) {
		return false
	}
	for !v.Empty() {
		if !elem(&v) {
			return false
		}
	}
	return true
}

// readUint16List decodes a vector of two-byte code points (Capabilities,
// RFC 9420 §7.2). An odd body length is malformed.
func readUint16List[T ~uint16](s *cryptobyte.String, out *[]T) bool {
	var list []T
	ok := readList(s, func(v *cryptobyte.String) bool {
		var x uint16
		if !v.ReadUint16(&x) {
			return false
		}
		list = append(list, T(x))
		return true
	})
	*out = list
	return ok
}

func addUint16List[T ~uint16](b *cryptobyte.Builder, list []T) {
	addVector(b, func(b *cryptobyte.Builder) {
		for _, x := range list {
			b.AddUint16(uint16(x))
		}
	})
}

// readUint32List decodes a vector of uint32 (ParentNode.unmerged_leaves,
// RFC 9420 §7.1).
func readUint32List(s *cryptobyte.String, out *[]uint32) bool {
	var list []uint32
	ok := readList(s, func(v *cryptobyte.String) bool {
		var x uint32
		if !v.ReadUint32(&x) {
			return false
		}
		list = append(list, x)
		return true
	})
	*out = list
	return ok
}

func addUint32List(b *cryptobyte.Builder, list []uint32) {
	addVector(b, func(b *cryptobyte.Builder) {
		for _, x := range list {
			b.AddUint32(x)
		}
	})
}
