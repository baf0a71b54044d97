package loadkit

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/wire"
)

func TestOpenChecksEnvelope(t *testing.T) {
	id := wire.MessageID{1, 2, 3}
	b := Encode(7, 3, 42, 1500*time.Millisecond, id)
	e, ok := Open(b, 3, id)
	if want := (Envelope{From: 7, To: 3, Seq: 42, Sent: 1500 * time.Millisecond}); !ok || e != want {
		t.Fatalf("Open = %+v, %v; want %+v, true", e, ok, want)
	}
	if _, ok := Open(b, 4, id); ok {
		t.Error("Open accepted an envelope addressed to another client")
	}
	if _, ok := Open(b, 3, wire.MessageID{9}); ok {
		t.Error("Open accepted an envelope under another message ID")
	}
	if _, ok := Open(b[:len(b)-1], 3, id); ok {
		t.Error("Open accepted a short envelope")
	}
	for _, i := range []int{HeaderSize, EnvelopeSize - 1} {
		c := bytes.Clone(b)
		c[i]++
		if _, ok := Open(c, 3, id); ok {
			t.Errorf("Open accepted an envelope with filler byte %d changed", i)
		}
	}
}

func TestTally(t *testing.T) {
	acked := map[uint64]bool{Key(0, 0): true, Key(0, 1): true, Key(1, 0): true}
	delivered := map[uint64]int{Key(0, 0): 1, Key(0, 1): 3, Key(2, 5): 1}
	lost, dup, unacked := Tally(acked, delivered)
	if lost != 1 || dup != 2 || unacked != 1 {
		t.Errorf("Tally = lost %d, duplicated %d, unacked %d; want 1, 2, 1", lost, dup, unacked)
	}
}

func TestLockedBufferBounded(t *testing.T) {
	var l LockedBuffer
	line := strings.Repeat("x", 4096)
	for range 2 * logLimit / len(line) {
		if n, err := l.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if n := len(l.String()); n < logLimit || n > logLimit+len(line) {
		t.Errorf("kept %d bytes, want about %d", n, logLimit)
	}
}

// FuzzOpen: Open never panics, and what it accepts is exactly what
// Encode writes for the envelope it read.
func FuzzOpen(f *testing.F) {
	id := wire.MessageID{1}
	f.Add(Encode(1, 2, 3, time.Second, id), 2)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, at int) {
		e, ok := Open(b, at, id)
		if !ok {
			return
		}
		if again := Encode(e.From, e.To, e.Seq, e.Sent, id); !bytes.Equal(again, b) {
			t.Fatalf("Open accepted %x as %+v, which encodes to %x", b, e, again)
		}
	})
}

func TestSends(t *testing.T) {
	var seqs []int
	Sends(1, 3, 5, time.Millisecond, time.Now().Add(time.Minute), func(seq, to int) bool {
		if to == 1 || to < 0 || to > 2 {
			t.Errorf("send %d to client %d: want another of 0..2", seq, to)
		}
		seqs = append(seqs, seq)
		return true
	})
	if len(seqs) != 5 || seqs[0] != 0 || seqs[4] != 4 {
		t.Errorf("sends %v, want 0..4", seqs)
	}
	n := 0
	Sends(0, 2, 5, time.Millisecond, time.Now().Add(time.Minute), func(seq, to int) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("%d sends after send returned false at the second, want 2", n)
	}
	n = 0
	Sends(0, 2, 5, time.Millisecond, time.Now(), func(seq, to int) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d sends after the end, want 0", n)
	}
}
