package server

import (
	"testing"

	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/wire"
)

// TestMaxDeliverable checks the constant against the wire encoder: a
// Delivery carrying MaxDeliverable bytes fills the largest bucket at most,
// one byte more does not fit, and every envelope Send accepts fits.
func TestMaxDeliverable(t *testing.T) {
	for _, sizes := range [][]int{padding.Default.Buckets(), {512, 2048, 16384}, {1024}} {
		p, err := padding.NewPolicy(sizes...)
		if err != nil {
			t.Fatal(err)
		}
		n := MaxDeliverable(p)
		if _, err := wire.AppendMessage(nil, p, &wire.Delivery{Envelope: make([]byte, n)}); err != nil {
			t.Errorf("%v: a Delivery of %d bytes does not fit: %v", sizes, n, err)
		}
		if _, err := wire.AppendMessage(nil, p, &wire.Delivery{Envelope: make([]byte, n+1)}); err == nil {
			t.Errorf("%v: a Delivery of %d bytes fits: MaxDeliverable is too small", sizes, n+1)
		}
		if send := wire.MaxEnvelope(p); send > n {
			t.Errorf("%v: Send accepts %d bytes, more than a Delivery carries (%d)", sizes, send, n)
		}
	}
}

// TestConfigStoreLimit: the store opens under the limit the policy can
// deliver, so a store filled under a larger policy is refused.
func TestConfigStoreLimit(t *testing.T) {
	c := config.Default()
	c.Buckets = []int{512, 2048, 16384}
	_, so, err := OptionsFromConfig(&c)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := padding.NewPolicy(c.Buckets...)
	if so.MaxEnvelope != MaxDeliverable(p) {
		t.Fatalf("store MaxEnvelope %d, want %d", so.MaxEnvelope, MaxDeliverable(p))
	}
}
