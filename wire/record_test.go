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
// after it still reads, the grown buffer is kept for the next record of
// the same stream, and Reset drops it.
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
	// The records after the first reuse its buffer.
	r.Reset(&cycle{b: rec}, p)
	if _, _, err := r.ReadRecord(); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(10, func() {
		if _, _, err := r.ReadRecord(); err != nil {
			t.Fatal(err)
		}
	}); allocs > 1 { // the header array escapes
		t.Fatalf("a warm reader allocated %v times per record", allocs)
	}
	// A pooled reader keeps no large buffer that no budget accounts for.
	r.Reset(nil, p)
	if c := cap(r.buf); c > ReadChunk {
		t.Fatalf("after Reset the reader holds %d bytes (bound %d)", c, ReadChunk)
	}
}

// cycle reads b over and over.
type cycle struct {
	b   []byte
	off int
}

func (c *cycle) Read(p []byte) (int, error) {
	n := copy(p, c.b[c.off:])
	c.off = (c.off + n) % len(c.b)
	return n, nil
}

// budget is a Budget that allows up to limit bytes in all.
type budget struct {
	taken, limit int
	calls        []int
}

func (b *budget) Take(n int) error {
	b.calls = append(b.calls, n)
	if b.taken+n > b.limit {
		return Errorf(CodeUnavailable, "budget full")
	}
	b.taken += n
	return nil
}

// TestReaderBudget: a Reader charges its budget as a record's body grows,
// not what the header announces; a budget that refuses ends the read with
// its error before the bytes are read; the charge is the most the buffer
// held, once, across the records of one stream.
func TestReaderBudget(t *testing.T) {
	p := padding.Default
	n := p.Max() - HeaderSize
	hdr := []byte{byte(KindSend), byte(n >> 16), byte(n >> 8), byte(n)}

	// A header and 100 bytes: one step of ReadChunk is charged.
	b := &budget{limit: 1 << 30}
	r := NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(make([]byte, 100))), p)
	r.SetBudget(b)
	if _, _, err := r.ReadRecord(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stalled record: %v", err)
	}
	if b.taken != ReadChunk {
		t.Fatalf("a header and 100 bytes charged %d bytes (%v), want %d", b.taken, b.calls, ReadChunk)
	}

	// Whole records of the largest bucket: the charge is the body's
	// size, taken in growing steps, and a second record costs nothing.
	body := bytes.Repeat([]byte{7}, n)
	rec, err := AppendRecord(nil, p, KindSend, body)
	if err != nil {
		t.Fatal(err)
	}
	b = &budget{limit: 1 << 30}
	r.Reset(bytes.NewReader(append(rec, rec...)), p)
	r.SetBudget(b)
	for i := range 2 {
		if _, got, err := r.ReadRecord(); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("record %d: %d bytes, %v", i, len(got), err)
		}
	}
	if b.taken != n || len(b.calls) < 2 {
		t.Fatalf("two records of %d bytes charged %d in %v, want %d in steps", n, b.taken, b.calls, n)
	}

	// A budget of 40 KiB: the read stops with the budget's error once
	// the next step would pass it, having read no more than it charged.
	b = &budget{limit: 40 << 10}
	src := bytes.NewReader(rec)
	r.Reset(src, p)
	r.SetBudget(b)
	_, _, err = r.ReadRecord()
	if code, _ := CodeOf(err); code != CodeUnavailable {
		t.Fatalf("over the budget: %v, want UNAVAILABLE", err)
	}
	if read := len(rec) - src.Len(); read > HeaderSize+b.taken+4096 {
		t.Fatalf("read %d bytes of the record with %d charged", read, b.taken)
	}
	if b.taken > 40<<10 || cap(r.buf) > b.taken+ReadChunk {
		t.Fatalf("charged %d, buffer %d, over the budget", b.taken, cap(r.buf))
	}
}
