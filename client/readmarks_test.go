package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
)

// Conversation IDs of readFixture.
var (
	bobChat  = []byte{0xb0, 0x01} // the direct chat with bob
	bobChat2 = []byte{0xb0, 0x02} // the one bob started at the same time
	teamChat = []byte{0x7e}       // the group "team"
	carolDM  = []byte{0xca}       // the direct chat with carol
)

// readFixture makes a local state of alice's (registered, nothing
// published, so no server is needed) with four conversations and one text
// from bob in the history, and opens it.
func readFixture(t *testing.T) *Client {
	t.Helper()
	home, st, p := newFixture(t, "alice")
	created := time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)
	convs := []*convRecord{
		{ID: bobChat, Kind: content.ConvDirect, Peer: "bob", Active: true, Created: created},
		{ID: bobChat2, Kind: content.ConvDirect, Peer: "bob", Active: true, Created: created.Add(time.Second)},
		{ID: teamChat, Kind: content.ConvGroup, Name: "team", Creator: "carol", Active: true, Created: created.Add(2 * time.Second)},
		{ID: carolDM, Kind: content.ConvDirect, Peer: "carol", Active: true, Created: created.Add(3 * time.Second)},
	}
	err := st.Update(func(tx *state.Tx) error {
		raw, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if err := tx.Put(bucketMeta, keyProfile, raw); err != nil {
			return err
		}
		for _, r := range convs {
			if err := putJSON(tx, bucketConvs, r.ID, r); err != nil {
				return err
			}
		}
		return nil
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := openAt(t, home)
	addEvent(t, c, bobChat, Event{Kind: EventMessage, From: "bob", Text: "before read marks existed"})
	return c
}

func openAt(t *testing.T, home string) *Client {
	t.Helper()
	c, err := Open(Options{Home: home, Passphrase: []byte("local")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// addEvent records e in the history of conversation id, as receiving it
// would.
func addEvent(t *testing.T, c *Client, id []byte, e Event) {
	t.Helper()
	r, err := c.getConv(id)
	if err != nil || r == nil {
		t.Fatalf("conversation %x: %v", id, err)
	}
	if err := c.store.Update(func(tx *state.Tx) error { c.history(tx, r, e); return nil }); err != nil {
		t.Fatal(err)
	}
}

func wantUnread(t *testing.T, c *Client, want map[string]int) {
	t.Helper()
	got, err := c.Unread()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("unread %v, want %v", got, want)
	}
}

func markRead(t *testing.T, c *Client, target string) {
	t.Helper()
	if err := c.MarkRead(target); err != nil {
		t.Fatalf("MarkRead(%q): %v", target, err)
	}
}

// TestReadMarks: Unread counts the texts from others after each
// conversation's read mark, MarkRead moves it (for every direct chat with
// the contact), and the marks persist in the local state across a restart.
func TestReadMarks(t *testing.T) {
	c := readFixture(t)
	home := c.Home()
	// The text stored before the first call counts as read.
	wantUnread(t, c, map[string]int{})

	addEvent(t, c, bobChat, Event{Kind: EventMessage, From: "bob", Text: "one"})
	addEvent(t, c, bobChat, Event{Kind: EventMessage, From: "alice", Text: "mine: never unread"})
	addEvent(t, c, bobChat, Event{Kind: EventMessage, From: "bob", Text: "two"})
	addEvent(t, c, bobChat2, Event{Kind: EventMessage, From: "bob", Text: "in the other chat"})
	addEvent(t, c, teamChat, Event{Kind: EventMemberAdded, From: "dave", Text: "dave joined: not a text"})
	addEvent(t, c, teamChat, Event{Kind: EventMessage, From: "carol", Text: "meeting"})
	addEvent(t, c, carolDM, Event{Kind: EventMessage, From: "carol", Text: "psst"})
	wantUnread(t, c, map[string]int{"b001": 2, "b002": 1, "7e": 1, "ca": 1})

	markRead(t, c, "bob")
	wantUnread(t, c, map[string]int{"7e": 1, "ca": 1})
	markRead(t, c, "#team")
	wantUnread(t, c, map[string]int{"ca": 1})
	addEvent(t, c, bobChat, Event{Kind: EventMessage, From: "bob", Text: "three"})
	wantUnread(t, c, map[string]int{"b001": 1, "ca": 1})

	// A restart keeps them.
	c.Close()
	c = openAt(t, home)
	wantUnread(t, c, map[string]int{"b001": 1, "ca": 1})
	markRead(t, c, "ca") // by hex ID, as the chat screen names it
	wantUnread(t, c, map[string]int{"b001": 1})

	if err := c.MarkRead("nobody"); !errors.Is(err, ErrNoSuchConv) {
		t.Fatalf("MarkRead of an unknown conversation: %v", err)
	}
	// Read receipts are off: marking read scheduled none.
	if n := count(t, c, bucketReceipts); n != 0 {
		t.Fatalf("%d receipts scheduled with receipts off", n)
	}
}

func count(t *testing.T, c *Client, bucket string) int {
	t.Helper()
	n := 0
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucket, 0, func(uint64, []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMarkReadReceipts: moving the read mark still schedules the read
// receipt of a direct chat whose contact has them on, and none for a
// group.
func TestMarkReadReceipts(t *testing.T) {
	c := readFixture(t)
	if err := c.SetReceipts("bob", false, true); err != nil {
		t.Fatal(err)
	}
	id := [content.IDSize]byte{9}
	err := c.store.Update(func(tx *state.Tx) error {
		if err := putJSON(tx, bucketUnread, bobChat, [][content.IDSize]byte{id}); err != nil {
			return err
		}
		return putJSON(tx, bucketUnread, teamChat, [][content.IDSize]byte{id})
	})
	if err != nil {
		t.Fatal(err)
	}
	markRead(t, c, "#team")
	if n := count(t, c, bucketReceipts); n != 0 {
		t.Fatalf("a group scheduled %d receipts", n)
	}
	markRead(t, c, "bob")
	var got []receiptEntry
	err = c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketReceipts, 0, func(_ uint64, v []byte) error {
			var e receiptEntry
			err := json.Unmarshal(v, &e)
			got = append(got, e)
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].To != "bob" || got[0].Type != content.ReceiptRead || len(got[0].IDs) != 1 || got[0].IDs[0] != id {
		t.Fatalf("scheduled %+v, want one read receipt to bob", got)
	}
}

// TestReadMarksBackup: a backup with the history restores the unread
// counts; one without starts with none unread, and counts what comes after.
func TestReadMarksBackup(t *testing.T) {
	c := readFixture(t)
	wantUnread(t, c, map[string]int{})
	addEvent(t, c, bobChat, Event{Kind: EventMessage, From: "bob", Text: "one"})
	addEvent(t, c, carolDM, Event{Kind: EventMessage, From: "carol", Text: "two"})
	markRead(t, c, "carol")
	addEvent(t, c, bobChat, Event{Kind: EventMessage, From: "bob", Text: "three"})
	want := map[string]int{"b001": 2}
	wantUnread(t, c, want)

	for _, withHistory := range []bool{true, false} {
		var buf bytes.Buffer
		if err := c.ExportBackup(&buf, []byte("backup pass"), withHistory); err != nil {
			t.Fatal(err)
		}
		prompt, _ := prompter("backup pass")
		r, err := RestoreBackup(context.Background(), bytes.NewReader(buf.Bytes()), prompt, Options{Home: filepath.Join(t.TempDir(), "restored"), Passphrase: []byte("new"), KDF: cheapKDF})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if withHistory {
			wantUnread(t, r, want)
			continue
		}
		wantUnread(t, r, map[string]int{})
		addEvent(t, r, carolDM, Event{Kind: EventMessage, From: "carol", Text: "after the restore"})
		wantUnread(t, r, map[string]int{"ca": 1})
	}
}

// TestRenumber: a position in the backup's history maps to the last
// restored entry at or before it.
func TestRenumber(t *testing.T) {
	h := renumbering{{old: 2, new: 1}, {old: 3, new: 2}, {old: 7, new: 3}}
	for old, want := range map[uint64]uint64{0: 0, 1: 0, 2: 1, 3: 2, 4: 2, 6: 2, 7: 3, 100: 3} {
		if got := h.renumber(old); got != want {
			t.Errorf("renumber(%d) = %d, want %d", old, got, want)
		}
	}
	if got := renumbering(nil).renumber(5); got != 0 {
		t.Errorf("renumber without a history = %d", got)
	}
}
