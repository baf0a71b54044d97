package pgstore

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/server/store"
)

// FuzzParsePayload: any payload decodes to wake tags that encode back to
// it, or is refused; nothing panics.
func FuzzParsePayload(f *testing.F) {
	tag := strings.Repeat("ab", store.WakeTagSize)
	id := strings.Repeat("ab", store.MailboxIDSize)
	// good: one tag, two tags, a payload at the bound, a header alone.
	f.Add("s0123456789abcdef" + tag)
	f.Add("d0123456789abcdef" + tag + tag)
	f.Add("s0123456789abcdef" + strings.Repeat(tag, notifyTags))
	f.Add("s0123456789abcdef")
	// fail: unknown kind, bad node tag, a cut tag, a bad hex digit.
	f.Add("x0123456789abcdef" + tag)
	f.Add("s0123456789abcdeg" + tag)
	f.Add("s0123456789abcdef" + tag[:31])
	f.Add("s0123456789abcdef" + tag[:31] + "z")
	// the form before keyed tags: a receive ID of 64 hex digits is two
	// tags' worth, so it parses as two tags that name no mailbox.
	f.Add("s0123456789abcdef" + id)
	f.Fuzz(func(t *testing.T, p string) {
		kind, node, tags, err := parsePayload(p)
		if err != nil {
			return
		}
		var b strings.Builder
		b.WriteByte(kind)
		b.WriteString(node)
		for _, tag := range tags {
			b.WriteString(hex.EncodeToString(tag[:]))
		}
		if !strings.EqualFold(b.String(), p) {
			t.Fatalf("payload %q decodes to %q", p, b.String())
		}
	})
}

// TestPayloadBound: a payload of the most tags stays under PostgreSQL's
// limit of 8000 bytes, and a full group-commit batch fits in two.
func TestPayloadBound(t *testing.T) {
	s := &Store{nodeKey: make([]byte, 32), wakeKey: make([]byte, store.WakeKeySize)}
	rids := make([][store.MailboxIDSize]byte, maxBatch)
	for i := range rids {
		rids[i][0], rids[i][1] = byte(i), byte(i>>8)
	}
	ps := s.payloads(kindStored, rids)
	if len(ps) != (maxBatch+notifyTags-1)/notifyTags {
		t.Fatalf("%d payloads for %d mailboxes", len(ps), maxBatch)
	}
	for _, p := range ps {
		if len(p) >= 8000 {
			t.Fatalf("a payload of %d bytes", len(p))
		}
		if _, _, _, err := parsePayload(p); err != nil {
			t.Fatal(err)
		}
		if !s.own(p) || (&Store{nodeKey: bytes.Repeat([]byte{1}, 32), wakeKey: s.wakeKey}).own(p) {
			t.Fatal("a node's mark is not its own, or another's")
		}
	}
	if ps[0][1:headerLen] == ps[1][1:headerLen] {
		t.Fatal("two payloads of one node carry the same mark")
	}
	if len(ps[0]) != headerLen+notifyTags*tagHex || len(ps[0]) > maxPayload {
		t.Fatalf("a full payload has %d bytes", len(ps[0]))
	}
}
