package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
)

// storedConv is the record of conversation id as stored, raw.
func storedConv(t *testing.T, c *Client, id []byte) []byte {
	t.Helper()
	var raw []byte
	err := c.store.View(func(tx *state.Tx) error {
		var err error
		raw, err = tx.Get(bucketConvs, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// groupState is a real group state (mls.Group.Marshal) of a group of one.
func groupState(t *testing.T) []byte {
	t.Helper()
	id, err := mls.NewBasicIdentity(mls.SuiteX25519AES128GCMSHA256Ed25519, []byte("me"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := mls.Create(id, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func saveConv(t *testing.T, c *Client, r *convRecord) {
	t.Helper()
	if err := c.store.Update(func(tx *state.Tx) error { return putConv(tx, r) }); err != nil {
		t.Fatal(err)
	}
}

func loadConv(t *testing.T, c *Client, id []byte) *convRecord {
	t.Helper()
	r, err := c.getConv(id)
	if err != nil || r == nil {
		t.Fatalf("getConv: %v, %v", r, err)
	}
	return r
}

// TestConvPastStatesApart: the states of the past epochs kept for the fork
// choice and the messages sent in each epoch are stored apart from the
// conversation's record, so that a message, which rewrites the record,
// does not rewrite them (issue 22: they made the record of a direct chat
// grow past 100 KB, rewritten with an fsync for every text on both
// sides). A fork choice still finds them after a restart, and drops what
// it drops.
func TestConvPastStatesApart(t *testing.T) {
	c := backupFixture(t)
	id := bytes.Repeat([]byte{0xc0}, 32)
	group := groupState(t)
	r := &convRecord{ID: id, Group: group, Members: map[string]*memberRecord{}, Active: true}
	stateOf := func(epoch int) []byte { return bytes.Repeat([]byte{byte(epoch)}, 7000) }
	text := func(epoch, i int) []byte {
		return fmt.Appendf(bytes.Repeat([]byte{'p'}, 400), "epoch %d text %d", epoch, i)
	}
	// Epochs 1 to 6, 40 texts sent in each; epochs 2 to 5 are kept.
	// The fixture has a conversation of its own: count beyond it.
	count := func(bucket string) (n int) {
		c.store.View(func(tx *state.Tx) error {
			return tx.ForEach(bucket, func(_, _ []byte) error { n++; return nil })
		})
		return n
	}
	states0, sent0 := count(bucketConvStates), count(bucketConvSent)
	saveConv(t, c, r)
	var sizes []int
	for epoch := 1; epoch <= 6; epoch++ {
		for i := range 40 {
			r = loadConv(t, c, id)
			r.noteSent(text(epoch, i))
			saveConv(t, c, r)
			sizes = append(sizes, len(storedConv(t, c, id)))
		}
		if epoch < 6 {
			r = loadConv(t, c, id)
			c.pushLink(r, uint64(epoch), stateOf(epoch), []byte{2, byte(epoch)}, nil, nil)
			saveConv(t, c, r)
		}
	}
	if len(r.Chain) != maxChain {
		t.Fatalf("%d links kept, want %d", len(r.Chain), maxChain)
	}
	// The record grows by the links' few numbers, never by a state or a
	// text: with them inside it was 4 × 7000 + 240 × 400 bytes more. The
	// current group state is apart too (ADR 0044).
	for i, n := range sizes {
		if n > 2000 {
			t.Fatalf("after text %d the record is %d bytes: past states or texts are in it", i, n)
		}
	}
	if bytes.Contains(storedConv(t, c, id), []byte("epoch 6 text")) {
		t.Fatal("a sent text is in the record")
	}

	// After a restart (a fresh read), the fork choice returns to epoch 3
	// (link 1): the texts of epochs 4, 5 and 6 are to be sent again, and
	// epoch 3's state is there.
	r = loadConv(t, c, id)
	if r.Chain[1].Epoch != 3 {
		t.Fatalf("link 1 is of epoch %d", r.Chain[1].Epoch)
	}
	raw, err := c.linkState(r, 1)
	if err != nil || !bytes.Equal(raw, stateOf(3)) {
		t.Fatalf("epoch 3's state: %d bytes, %v", len(raw), err)
	}
	ident, err := mls.NewBasicIdentity(DefaultSuite, []byte("alice"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := mls.Create(ident, &mls.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	resend, _, err := c.switchBranch(r, 1, next, []byte{1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for epoch := 4; epoch <= 6; epoch++ {
		for i := range 40 {
			want = append(want, text(epoch, i))
		}
	}
	if !equalBytes(resend, want) {
		t.Fatalf("%d texts to send again, want %d", len(resend), len(want))
	}
	saveConv(t, c, r)
	// What the dropped epochs kept is gone: epochs 1 (trimmed), 4 and 5
	// (dropped) leave their states and texts nowhere; epochs 2 and 3 keep
	// theirs.
	if n := count(bucketConvStates) - states0; n != 2 {
		t.Fatalf("%d past states stored, want 2", n)
	}
	if n := count(bucketConvSent) - sent0; n != 80 {
		t.Fatalf("%d sent texts stored, want 80 (epochs 2 and 3)", n)
	}
}

// TestConvMaxResendApart: an epoch keeps only its newest maxResend sent
// texts, apart from the record.
func TestConvMaxResendApart(t *testing.T) {
	c := backupFixture(t)
	id := bytes.Repeat([]byte{0xc1}, 32)
	r := &convRecord{ID: id, Members: map[string]*memberRecord{}, Active: true}
	for i := range maxResend + 10 {
		r.noteSent(fmt.Appendf(nil, "text %d", i))
	}
	saveConv(t, c, r)
	r = loadConv(t, c, id)
	got, err := c.sentIn(r, r.SentFrom, r.SentTo)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != maxResend || string(got[0]) != "text 10" || string(got[maxResend-1]) != fmt.Sprintf("text %d", maxResend+9) {
		t.Fatalf("%d texts kept, from %q", len(got), got[0])
	}
}

// TestConvLegacyChainMigrates: a record from before the states were kept
// apart (past states and sent texts inside it) reads as before, and its
// next write moves them out.
func TestConvLegacyChainMigrates(t *testing.T) {
	c := backupFixture(t)
	id := bytes.Repeat([]byte{0xc2}, 32)
	group := groupState(t)
	type legacyLink struct {
		Epoch   uint64
		State   []byte
		OutRank []byte
		Sent    [][]byte
	}
	legacy := map[string]any{
		"ID": id, "Group": group, "Active": true,
		"Chain": []legacyLink{{Epoch: 7, State: []byte("state of epoch 7"), OutRank: []byte{2}, Sent: [][]byte{[]byte("sent in 7")}}},
		"Sent":  [][]byte{[]byte("sent in 8"), []byte("also in 8")},
	}
	raw, err := json.Marshal(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.store.Update(func(tx *state.Tx) error { return tx.Put(bucketConvs, id, raw) }); err != nil {
		t.Fatal(err)
	}
	check := func(r *convRecord) {
		t.Helper()
		st, err := c.linkState(r, 0)
		if err != nil || string(st) != "state of epoch 7" {
			t.Fatalf("epoch 7's state %q, %v", st, err)
		}
		s7, _ := c.sentIn(r, r.Chain[0].SentFrom, r.Chain[0].SentTo)
		s8, _ := c.sentIn(r, r.SentFrom, r.SentTo)
		if !equalBytes(s7, [][]byte{[]byte("sent in 7")}) || !equalBytes(s8, [][]byte{[]byte("sent in 8"), []byte("also in 8")}) {
			t.Fatalf("sent texts %q, %q", s7, s8)
		}
		if !bytes.Equal(r.Group, group) {
			t.Fatal("the group state did not survive")
		}
	}
	r := loadConv(t, c, id)
	check(r)
	saveConv(t, c, r)
	if b := storedConv(t, c, id); bytes.Contains(b, []byte(`"State"`)) || bytes.Contains(b, []byte(`"Sent"`)) || bytes.Contains(b, []byte(`"Group"`)) {
		t.Fatalf("the record still holds its past: %s", b)
	}
	check(loadConv(t, c, id))
}

func equalBytes(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// storedParts returns the group state's two parts and the record of
// conversation id as stored.
func storedParts(t *testing.T, c *Client, id []byte) (base, ratchets, record []byte) {
	t.Helper()
	err := c.store.View(func(tx *state.Tx) error {
		var err error
		if base, err = tx.Get(bucketConvGroup, id); err != nil {
			return err
		}
		if ratchets, err = tx.Get(bucketConvRatchets, id); err != nil {
			return err
		}
		record, err = tx.Get(bucketConvs, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return base, ratchets, record
}

// TestConvRatchetsApartOneTransaction: the current group state is stored
// beside the record in two parts (ADR 0044). A text rewrites the ratchets
// and the record, not the base; the three are written in the record's one
// transaction, so a transaction that fails leaves all three as they were
// (if the ratchets were written in a transaction of their own, a crash
// between the two would leave a generation used on disk that the record's
// reservation does not know, or a text's state without its record). And a
// base and ratchets that were not written together never load as a group
// state: reading them is ErrCorruptState.
func TestConvRatchetsApartOneTransaction(t *testing.T) {
	c := backupFixture(t)
	id := bytes.Repeat([]byte{0xc3}, 32)
	ident, err := mls.NewBasicIdentity(mls.SuiteX25519AES128GCMSHA256Ed25519, []byte("me"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := mls.Create(ident, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &convRecord{ID: id, Members: map[string]*memberRecord{}, Active: true}
	save := func(tx *state.Tx) error {
		if err := c.saveGroup(r, g); err != nil {
			return err
		}
		r.MySeq++
		return putConv(tx, r)
	}
	if err := c.store.Update(save); err != nil {
		t.Fatal(err)
	}
	base0, rat0, rec0 := storedParts(t, c, id)
	if bytes.Contains(rec0, []byte(`"Group"`)) {
		t.Fatal("the group state is in the record")
	}

	// A text: the ratchets and the record change, the base does not.
	if _, err := g.Encrypt([]byte("text")); err != nil {
		t.Fatal(err)
	}
	if err := c.store.Update(save); err != nil {
		t.Fatal(err)
	}
	base1, rat1, rec1 := storedParts(t, c, id)
	if !bytes.Equal(base1, base0) || bytes.Equal(rat1, rat0) || bytes.Equal(rec1, rec0) {
		t.Fatalf("after a text: base changed %v, ratchets changed %v, record changed %v",
			!bytes.Equal(base1, base0), !bytes.Equal(rat1, rat0), !bytes.Equal(rec1, rec0))
	}
	if len(rat1) > len(base1)/2 {
		t.Errorf("a text rewrites %d + %d bytes beside a %d-byte base", len(rat1), len(rec1), len(base1))
	}
	if got := loadConv(t, c, id); !bytes.Equal(got.Group, r.Group) || got.MySeq != r.MySeq {
		t.Fatal("the stored group state or record is not the one written")
	}

	// The next text's transaction fails after putConv: nothing of it is
	// on disk, neither the record nor the ratchets.
	if _, err := g.Encrypt([]byte("text 2")); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("the transaction fails after putConv")
	if err := c.store.Update(func(tx *state.Tx) error {
		if err := save(tx); err != nil {
			return err
		}
		return failed
	}); !errors.Is(err, failed) {
		t.Fatal(err)
	}
	base2, rat2, rec2 := storedParts(t, c, id)
	if !bytes.Equal(base2, base1) || !bytes.Equal(rat2, rat1) || !bytes.Equal(rec2, rec1) {
		t.Fatalf("a failed transaction left part of its writes: base %v, ratchets %v, record %v",
			!bytes.Equal(base2, base1), !bytes.Equal(rat2, rat1), !bytes.Equal(rec2, rec1))
	}

	// A commit: a new base. The in-memory record still says the base on
	// disk is base1's; putConv compares with the disk, and writes it.
	if _, err := g.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if err := c.store.Update(save); err != nil {
		t.Fatal(err)
	}
	base3, rat3, _ := storedParts(t, c, id)
	if bytes.Equal(base3, base1) {
		t.Fatal("a commit did not rewrite the base")
	}
	if got := loadConv(t, c, id); !bytes.Equal(got.Group, r.Group) {
		t.Fatal("the stored group state after the commit is not the one written")
	}

	// Parts written apart never load together.
	for name, p := range map[string][2][]byte{
		"the new base with the old ratchets": {base3, rat1},
		"the old base with the new ratchets": {base1, rat3},
	} {
		if err := c.store.Update(func(tx *state.Tx) error {
			if err := tx.Put(bucketConvGroup, id, p[0]); err != nil {
				return err
			}
			return tx.Put(bucketConvRatchets, id, p[1])
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.getConv(id); !errors.Is(err, ErrCorruptState) {
			t.Errorf("%s: %v, want ErrCorruptState", name, err)
		}
	}
}
