package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/quicprochat/qpc/padding"
)

// TestAttackRecordHeaderStall: a stranger's 4-byte header announcing the
// largest bucket, followed by a few bytes and a stall, makes a Reader
// allocate at most ReadChunk, not the announced bucket; a whole record
// after it still reads, and the grown buffer is kept for the next.
func TestAttackRecordHeaderStall(t *testing.T) {
	p := padding.Default
	n := p.Max() - HeaderSize
	hdr := []byte{byte(KindSend), byte(n >> 16), byte(n >> 8), byte(n)}
	r := NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(make([]byte, 100))), p)
	_, _, err := r.ReadRecord()
	if code, _ := CodeOf(err); code != CodeProtocol || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stalled record: %v", err)
	}
	if c := cap(r.buf); c > ReadChunk {
		t.Fatalf("a header and 100 bytes made the reader hold %d bytes (bound %d)", c, ReadChunk)
	}

	body := bytes.Repeat([]byte{7}, n)
	rec, err := AppendRecord(nil, p, KindSend, body)
	if err != nil {
		t.Fatal(err)
	}
	r.Reset(bytes.NewReader(append(rec, rec...)), p)
	for i := range 2 {
		kind, got, err := r.ReadRecord()
		if err != nil || kind != KindSend || !bytes.Equal(got, body) {
			t.Fatalf("record %d: kind %v, %d bytes, %v", i, kind, len(got), err)
		}
	}
	// The second record reused the first one's buffer.
	br := bytes.NewReader(rec)
	if allocs := testing.AllocsPerRun(10, func() {
		br.Reset(rec)
		r.Reset(br, p)
		if _, _, err := r.ReadRecord(); err != nil {
			t.Fatal(err)
		}
	}); allocs > 1 {
		t.Fatalf("a warm reader allocated %v times per record", allocs)
	}
}
