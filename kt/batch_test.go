package kt

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestLookupBatch: a batch proves each label as its own lookup would,
// under one epoch proof, and a batch whose labels are swapped, whose
// proofs are swapped, or one of whose proofs is another label's, is
// refused.
func TestLookupBatch(t *testing.T) {
	d := newTestDir(t)
	ctx := context.Background()
	for i := range 3 {
		d.publish(t, fmt.Sprintf("user%d", i), []byte(fmt.Sprintf("v%d", i)))
	}
	d.publish(t, "user1", []byte("v1b"))
	labels := []string{"user0", "user1", "nobody", "user2"}
	p, err := d.LookupBatch(ctx, labels, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := p.Marshal()
	q, err := ParseBatchLookupProof(raw)
	if err != nil {
		t.Fatal(err)
	}
	v := d.verifier(t)
	res, err := v.VerifyLookupBatch(labels, q)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		version uint32
		value   string
	}{{1, "v0"}, {2, "v1b"}, {0, ""}, {1, "v2"}}
	for i, r := range res {
		if r.Label != labels[i] || r.Version != want[i].version || string(r.Value) != want[i].value {
			t.Fatalf("batch result %d: %s version %d %q, want %s %d %q", i, r.Label, r.Version, r.Value, labels[i], want[i].version, want[i].value)
		}
		single, err := lookup(t, d, d.verifier(t), labels[i])
		if err != nil {
			t.Fatal(err)
		}
		if single.Version != r.Version || string(single.Value) != string(r.Value) || single.Record.Epoch != r.Record.Epoch {
			t.Fatalf("batch result %d differs from the single lookup", i)
		}
	}
	// A batch's size is what one record holds.
	if len(raw) > 96<<10 {
		t.Fatalf("a batch of %d labels is %d bytes", len(labels), len(raw))
	}
	swapped := []string{"user1", "user0", "nobody", "user2"}
	if _, err := d.verifier(t).VerifyLookupBatch(swapped, q); !errors.Is(err, ErrInvalid) {
		t.Fatalf("batch checked against swapped labels: %v, want ErrInvalid", err)
	}
	q2, _ := ParseBatchLookupProof(raw)
	q2.Lookups[2], q2.Lookups[3] = q2.Lookups[3], q2.Lookups[2]
	if _, err := d.verifier(t).VerifyLookupBatch(labels, q2); !errors.Is(err, ErrInvalid) {
		t.Fatalf("batch with swapped proofs: %v, want ErrInvalid", err)
	}
	if _, err := d.verifier(t).VerifyLookupBatch(labels[:3], q); !errors.Is(err, ErrInvalid) {
		t.Fatalf("batch of 4 proofs checked for 3 labels: %v, want ErrInvalid", err)
	}
	if _, err := d.LookupBatch(ctx, []string{"a", "b", "c", "d", "e"}, 0, nil); !errors.Is(err, ErrLabel) {
		t.Fatalf("batch of %d labels: %v, want ErrLabel", MaxBatchLabels+1, err)
	}
}
