package client

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
)

// TestEchoKeepsMigratedChain: a record from before the past epochs'
// states were kept apart (docs/adr/0032) is moved to the new layout when
// it is read, and the moved states are written with the record's next
// putConv. An echo of a commit (echo.go) stored the record alone: the
// record then named slots that were never written, and the past epoch's
// state, which the fork choice and late messages need, was lost.
func TestEchoKeepsMigratedChain(t *testing.T) {
	home, st, p := newFixture(t, "alice")
	id := []byte{0x7e}
	legacy := []byte("the state of epoch 3")
	sent := []byte("a text alice sent in epoch 3")
	until := time.Now().Add(time.Hour)
	r := &convRecord{
		ID: id, Kind: content.ConvGroup, Name: "team", Creator: "alice", Active: true, Created: time.Now(),
		Members: map[string]*memberRecord{"bob": {Sealing: []byte{1}}},
		Chain: []*epochLink{{Epoch: 3, LegacyState: legacy, LegacySent: [][]byte{sent}, Until: until,
			OutRank: []byte{2}, LegacyOut: []byte("the commit out of epoch 3")}},
	}
	err := st.Update(func(tx *state.Tx) error {
		raw, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if err := tx.Put(bucketMeta, keyProfile, raw); err != nil {
			return err
		}
		return putJSON(tx, bucketConvs, r.ID, r)
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := openAt(t, home)
	got, err := c.getConv(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.store.Update(c.echoBack(got, 0, "bob")); err != nil {
		t.Fatal(err)
	}
	again, err := c.getConv(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Chain) != 1 || len(again.Chain[0].EchoedTo) != 1 {
		t.Fatalf("the echo was not recorded: %+v", again.Chain)
	}
	if s, err := c.linkState(again, 0); err != nil || !bytes.Equal(s, legacy) {
		t.Fatalf("epoch 3's state after the echo: %q, %v", s, err)
	}
	if m, err := c.sentIn(again, again.Chain[0].SentFrom, again.Chain[0].SentTo); err != nil || len(m) != 1 || !bytes.Equal(m[0], sent) {
		t.Fatalf("epoch 3's sent texts after the echo: %q, %v", m, err)
	}
}
