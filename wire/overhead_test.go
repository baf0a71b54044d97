package wire

import (
	"testing"

	"github.com/quicprochat/qpc/padding"
)

// TestRecordOverheads: the exported overheads are what the encoders
// write. A Send or Delivery record whose envelope is exactly the limit
// fills the bucket; one byte more spills into the next.
func TestRecordOverheads(t *testing.T) {
	for _, auth := range []int{0, 101, MaxAuthSize} {
		body, err := Encode(&Send{Auth: make([]byte, auth), Envelope: make([]byte, 1000)})
		if err != nil {
			t.Fatal(err)
		}
		if got := HeaderSize + len(body) - 1000; got != SendOverhead(auth) {
			t.Errorf("auth %d: a Send record adds %d bytes, SendOverhead says %d", auth, got, SendOverhead(auth))
		}
	}
	body, err := Encode(&Delivery{Envelope: make([]byte, 1000)})
	if err != nil {
		t.Fatal(err)
	}
	if got := HeaderSize + len(body) - 1000; got != DeliveryOverhead {
		t.Errorf("a Delivery record adds %d bytes, DeliveryOverhead says %d", got, DeliveryOverhead)
	}
	p := padding.Default
	max := &Send{Auth: make([]byte, MaxAuthSize), Envelope: make([]byte, MaxEnvelope(p))}
	if rec, err := AppendMessage(nil, p, max); err != nil || len(rec) != p.Max() {
		t.Errorf("a Send of MaxEnvelope: %d bytes, %v; want %d", len(rec), err, p.Max())
	}
	max.Envelope = append(max.Envelope, 0)
	if _, err := AppendMessage(nil, p, max); err == nil {
		t.Errorf("a Send of MaxEnvelope+1 fits the largest bucket")
	}
	if MaxDelivered(p) < MaxEnvelope(p) {
		t.Errorf("a Delivery carries %d bytes, less than Send accepts (%d)", MaxDelivered(p), MaxEnvelope(p))
	}
}
