package client

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
)

// TestConvCommitCost (QPC_BENCH=1) times the transaction a direct text
// writes for its conversation, in the layout before ADR 0044 (the whole
// group state inside the record, as the record's JSON) and in the split
// one (the record and the ratchets; the base only per epoch), alternating
// text by text on one real state file so that both see the same disk and
// load. It logs the bytes each writes and the medians.
func TestConvCommitCost(t *testing.T) {
	if os.Getenv("QPC_BENCH") == "" {
		t.Skip("QPC_BENCH unset")
	}
	c := backupFixture(t)
	id, err := mls.NewBasicIdentity(DefaultSuite, []byte("alice"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := mls.Create(id, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	bid, err := mls.NewBasicIdentity(DefaultSuite, []byte("bob"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := mls.NewKeyPackage(bid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Add(&kp.KeyPackage); err != nil {
		t.Fatal(err)
	}
	mk := func(b byte) *convRecord {
		r := &convRecord{ID: []byte{0xd0, b}, Peer: "bob", Members: map[string]*memberRecord{"bob": {Sealing: make([]byte, 32), LastSeq: 1000, Seen: true}}, Active: true, Created: time.Now()}
		r.Mailbox = &mailboxRecord{Sealing: make([]byte, 32)}
		return r
	}
	before, after := mk(1), mk(2)
	var tOld, tNew []time.Duration
	var bOld, bNew int
	const texts = 300
	for i := range texts {
		if _, err := g.Encrypt([]byte("text")); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*convRecord{before, after} {
			if err := c.saveGroup(r, g); err != nil {
				t.Fatal(err)
			}
			r.MySeq++
		}
		start := time.Now()
		if err := c.store.Update(func(tx *state.Tx) error {
			before.LegacyGroup = before.Group // the layout before: in the record
			raw, err := json.Marshal(before)
			bOld = len(raw)
			if err != nil {
				return err
			}
			return tx.Put(bucketConvs, before.ID, raw)
		}); err != nil {
			t.Fatal(err)
		}
		tOld = append(tOld, time.Since(start))
		start = time.Now()
		if err := c.store.Update(func(tx *state.Tx) error { return putConv(tx, after) }); err != nil {
			t.Fatal(err)
		}
		tNew = append(tNew, time.Since(start))
		if i == 0 {
			continue
		}
		_, rat, err := mls.SplitState(after.Group)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(after)
		bNew = len(raw) + len(rat)
	}
	med := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2].Microseconds()) / 1000
	}
	p99 := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)*99/100].Microseconds()) / 1000
	}
	t.Logf("a direct text's conversation commit, %d texts alternating: before (state in the record) %d bytes p50 %.2f ms p99 %.2f ms; split (record + ratchets) %d bytes p50 %.2f ms p99 %.2f ms; p50 ratio %.2f",
		texts, bOld, med(tOld), p99(tOld), bNew, med(tNew), p99(tNew), med(tNew)/med(tOld))
}
