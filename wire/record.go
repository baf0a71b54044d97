package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/quicprochat/qpc/padding"
)

// Kind is the first byte of a record and names its message type
// (docs/protocol.md §4).
type Kind uint8

// HeaderSize is the size of kind (u8) | length (u24).
const HeaderSize = 4

// maxLength is the largest body a u24 can describe; the policy's largest
// bucket is the tighter limit in practice.
const maxLength = 1<<24 - 1

// AppendRecord appends one record holding body to dst, padded with zeros to
// the smallest bucket of p (docs/protocol.md §2). It refuses a body that
// does not fit the largest bucket: no record leaves unpadded.
func AppendRecord(dst []byte, p padding.Policy, kind Kind, body []byte) ([]byte, error) {
	if len(body) > maxLength {
		return dst, Errorf(CodeTooLarge, "record body of %d bytes", len(body))
	}
	size, err := p.Bucket(HeaderSize + len(body))
	if err != nil {
		return dst, Errorf(CodeTooLarge, "record body of %d bytes exceeds the largest bucket %d", len(body), p.Max())
	}
	n := len(body)
	dst = append(dst, byte(kind), byte(n>>16), byte(n>>8), byte(n))
	dst = append(dst, body...)
	dst = append(dst, make([]byte, size-HeaderSize-n)...)
	return dst, nil
}

// ParseRecord splits the first record off b. It checks that the length
// fits the policy, that the record is exactly its bucket, and that the
// padding is zero. body aliases b.
func ParseRecord(p padding.Policy, b []byte) (kind Kind, body, rest []byte, err error) {
	if len(b) < HeaderSize {
		return 0, nil, nil, Errorf(CodeProtocol, "truncated record header")
	}
	n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	size, err := p.Bucket(HeaderSize + n)
	if err != nil {
		return 0, nil, nil, Errorf(CodeTooLarge, "record length %d exceeds the largest bucket %d", n, p.Max())
	}
	if len(b) < size {
		return 0, nil, nil, Errorf(CodeProtocol, "truncated record: %d of %d bytes", len(b), size)
	}
	if !zero(b[HeaderSize+n : size]) {
		return 0, nil, nil, Errorf(CodeProtocol, "nonzero record padding")
	}
	return Kind(b[0]), b[HeaderSize : HeaderSize+n], b[size:], nil
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Reader reads whole records from a stream.
type Reader struct {
	r       *bufio.Reader
	policy  padding.Policy
	buf     []byte
	budget  Budget
	charged int // bytes taken from budget since SetBudget
	size    int // bytes of the last record read, padding included
}

// Budget is what a Reader's record buffer is charged to: before the buffer
// grows to hold more of a body, the Reader asks for the bytes it is about
// to take. A Budget that refuses ends the read with its error, before the
// bytes are read. A Reader charges the most its buffer has held since
// SetBudget, once: the caller gives it all back when the stream is done.
type Budget interface {
	Take(n int) error
}

// NewReader reads records padded to policy p from r.
func NewReader(r io.Reader, p padding.Policy) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 4096), policy: p}
}

// Reset makes r read from a new stream with policy p, so a server can
// pool readers across requests. It keeps the read buffer and a record
// buffer of at most ReadChunk: a larger one, which only a large record
// grew, is dropped, so that a pool of Readers holds no memory that no
// Budget accounts for. It forgets the Budget.
func (r *Reader) Reset(rd io.Reader, p padding.Policy) {
	r.r.Reset(rd)
	r.policy = p
	if cap(r.buf) > ReadChunk {
		r.buf = nil
	}
	r.budget, r.charged = nil, 0
}

// SetBudget makes r charge b for its record buffer from now on (nil: no
// budget). What r already holds is not charged until a record needs it.
func (r *Reader) SetBudget(b Budget) { r.budget, r.charged = b, 0 }

// charge takes what a record buffer of need bytes costs beyond what r has
// charged already.
func (r *Reader) charge(need int) error {
	if r.budget == nil || need <= r.charged {
		return nil
	}
	if err := r.budget.Take(need - r.charged); err != nil {
		return err
	}
	r.charged = need
	return nil
}

// Buffered is how many bytes r has read from its stream beyond the
// records returned so far.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// SetPolicy switches the policy after the handshake.
func (r *Reader) SetPolicy(p padding.Policy) { r.policy = p }

// ReadRecord returns the next record's kind and body. The body is valid
// until the next call. A clean end of stream before any byte is io.EOF;
// an end inside a record is a CodeProtocol error wrapping
// io.ErrUnexpectedEOF.
func (r *Reader) ReadRecord() (Kind, []byte, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: %w", Errorf(CodeProtocol, "truncated record header"), err)
		}
		return 0, nil, err
	}
	n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	size, err := r.policy.Bucket(HeaderSize + n)
	if err != nil {
		return 0, nil, Errorf(CodeTooLarge, "record length %d exceeds the largest bucket %d", n, r.policy.Max())
	}
	rest, err := r.readBody(size - HeaderSize)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: %w", Errorf(CodeProtocol, "truncated record"), io.ErrUnexpectedEOF)
		}
		return 0, nil, err
	}
	if !zero(rest[n:]) {
		return 0, nil, Errorf(CodeProtocol, "nonzero record padding")
	}
	r.size = size
	return Kind(hdr[0]), rest[:n], nil
}

// RecordSize is the size on the wire, padding included (its bucket), of
// the last record ReadRecord or ReadMessage returned.
func (r *Reader) RecordSize() int { return r.size }

// ReadChunk is the most a record header alone makes a Reader allocate.
// A body longer than the buffer the Reader already holds grows as its
// bytes arrive, doubling from ReadChunk, so a peer that announces the
// largest bucket and stalls costs what it sent, not what it announced
// (issue 18 item 2). With a Budget, each step is charged before it is
// taken (docs/operations.md "Limits": request_bytes).
const ReadChunk = 16 << 10

// readBody reads the n bytes after a record header into r.buf.
func (r *Reader) readBody(n int) ([]byte, error) {
	if cap(r.buf) >= n {
		if err := r.charge(n); err != nil {
			return nil, err
		}
		rest := r.buf[:n]
		_, err := io.ReadFull(r.r, rest)
		return rest, err
	}
	buf := r.buf[:0]
	for len(buf) < n {
		step := min(n-len(buf), max(ReadChunk, len(buf)))
		if err := r.charge(len(buf) + step); err != nil {
			r.buf = buf[:0]
			return nil, err
		}
		// Exactly what is charged: append's growth would take a
		// quarter more. The old array is garbage from here on.
		grown := make([]byte, len(buf), len(buf)+step)
		copy(grown, buf)
		buf = grown
		r.buf = buf[:0]
		got, err := io.ReadFull(r.r, buf[len(buf):len(buf)+step])
		buf = buf[:len(buf)+got]
		if err != nil {
			r.buf = buf[:0]
			return nil, err
		}
	}
	r.buf = buf
	return buf, nil
}

// AtEOF reports whether the stream ends cleanly here: it blocks until the
// next byte or the end arrives (or the stream's read deadline passes), and
// is false if any byte follows or the read fails.
func (r *Reader) AtEOF() bool {
	_, err := r.r.Peek(1)
	return errors.Is(err, io.EOF)
}

// ReadMessage reads and decodes the next record.
func (r *Reader) ReadMessage() (Message, error) {
	kind, body, err := r.ReadRecord()
	if err != nil {
		return nil, err
	}
	return Decode(kind, body)
}

// WriteMessage encodes m as one padded record and writes it in a single
// Write call, so a record is never interleaved with another.
func WriteMessage(w io.Writer, p padding.Policy, m Message) error {
	rec, err := AppendMessage(nil, p, m)
	if err != nil {
		return err
	}
	_, err = w.Write(rec)
	return err
}

// AppendMessage appends m as one padded record to dst.
func AppendMessage(dst []byte, p padding.Policy, m Message) ([]byte, error) {
	body, err := Encode(m)
	if err != nil {
		return dst, err
	}
	return AppendRecord(dst, p, m.Kind(), body)
}
