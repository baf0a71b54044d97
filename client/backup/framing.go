package backup

import (
	"errors"
	"io"
)

// errFramingEnd: the input ended inside a packet. It must not be io.EOF
// or io.ErrUnexpectedEOF: the library's AEAD reader takes either for the
// end of the encrypted data, so a packet whose length field claims more
// bytes than follow (one flipped bit in the length) would otherwise pass
// as long as the ciphertext itself is whole.
var errFramingEnd = errors.New("input ends inside a packet")

// errFramingLegacy: a legacy-format packet header (RFC 9580 §4.2.2), which
// RFC 9580 implementations do not write and whose indeterminate length
// could not be checked.
var errFramingLegacy = errors.New("legacy packet header")

// framedReader passes a stream of packets through unchanged while following
// their new-format framing (RFC 9580 §4.2.1: header, then a length or a
// chain of partial body lengths), so that the input ending anywhere but at
// a packet boundary is errFramingEnd.
type framedReader struct {
	r         io.Reader
	state     framingState
	remaining int64  // bytes left in the current body part
	partial   bool   // the current part is a partial body length
	length    []byte // the length octets read so far
	err       error  // sticky framing error
}

type framingState uint8

const (
	wantTag framingState = iota
	wantLength
	inBody
)

func (f *framedReader) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if f.state == inBody {
		if int64(len(p)) > f.remaining {
			p = p[:f.remaining]
		}
		n, err = f.r.Read(p)
		f.remaining -= int64(n)
		if f.remaining == 0 {
			f.endPart()
		}
	} else {
		// One framing octet at a time: they are few.
		n, err = f.r.Read(p[:1])
		if n == 1 {
			f.framing(p[0])
		}
	}
	if f.err != nil {
		return n, f.err
	}
	if err == io.EOF && f.state != wantTag {
		f.err = errFramingEnd
		return n, f.err
	}
	return n, err
}

// framing takes one octet of a packet header.
func (f *framedReader) framing(b byte) {
	if f.state == wantTag {
		if b&0xC0 != 0xC0 {
			f.err = errFramingLegacy
			return
		}
		f.state, f.length = wantLength, f.length[:0]
		return
	}
	f.length = append(f.length, b)
	o := f.length[0]
	switch {
	case o < 192:
		f.startPart(int64(o), false)
	case o < 224:
		if len(f.length) == 2 {
			f.startPart(int64(o-192)<<8+int64(f.length[1])+192, false)
		}
	case o < 255:
		f.startPart(int64(1)<<(o&0x1f), true)
	default:
		if len(f.length) == 5 {
			l := f.length
			f.startPart(int64(l[1])<<24|int64(l[2])<<16|int64(l[3])<<8|int64(l[4]), false)
		}
	}
}

func (f *framedReader) startPart(n int64, partial bool) {
	f.state, f.remaining, f.partial = inBody, n, partial
	if n == 0 {
		f.endPart()
	}
}

// endPart: after a partial part another length follows, after the last
// part the next packet's tag.
func (f *framedReader) endPart() {
	f.length = f.length[:0]
	if f.partial {
		f.state = wantLength
	} else {
		f.state = wantTag
	}
}
