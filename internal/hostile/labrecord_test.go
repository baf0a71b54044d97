package hostile_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/lab/record"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/wire"
)

// requestKinds is every record kind the server answers as a request:
// the dispatch table's domain (wire.IsRequest), so that a kind added
// later fails TestLabRecordComplete until this test drives it and the
// observer records it.
func requestKinds() []wire.Kind {
	var ks []wire.Kind
	for k := range 256 {
		if wire.IsRequest(wire.Kind(k)) {
			ks = append(ks, wire.Kind(k))
		}
	}
	return ks
}

// TestLabRecordComplete plays the observer of issue 19 inside the server:
// real clients drive the real server through every request kind it
// handles, and the observer record the server writes (server/observer.go)
// must hold each kind with its fields, and agree with the hostile
// harness's tap, an independent view of the same connections: every
// request record, delivery, error and connection the tap saw is in the
// record, and nothing else is.
func TestLabRecordComplete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "observer.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	obs, err := server.NewObserver(f)
	if err != nil {
		t.Fatal(err)
	}
	h := hostile.Start(t, hostile.Options{Server: func(o *server.Options) { o.Observer = obs }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// The messenger: registration, login, KT publish, token issuance,
	// KeyPackages, first contact, a message and its fetch and ack.
	alice := h.NewUser(t, "alice", "alice")
	bob := h.NewUser(t, "bob", "bob")
	must("alice sends", alice.Send(ctx, "bob", "hello bob"))
	_, err = bob.Sync(ctx)
	must("bob syncs", err)
	_, err = alice.KTCheck(ctx)
	must("alice checks her KT history", err)
	_, err = alice.Status(ctx)
	must("alice status", err)

	// The protocol connection, for the requests the messenger makes
	// only now and then: health, the token quota, a subscription, a
	// mailbox deleted, KT checkpoint, consistency and tiles.
	c, err := protocol.Dial(ctx, h.Addr("conn"), h.ClientOptions(t).Dial)
	must("dial", err)
	defer c.Close()
	_, err = c.Health(ctx)
	must("health", err)
	sess, err := c.Register(ctx, "carol", []byte("password of carol"), [16]byte{1}, "lab")
	must("register carol", err)
	_, err = c.TokenQuota(ctx, sess)
	must("token quota", err)
	keys, err := c.TokenKeys(ctx)
	must("token keys", err)
	toks, err := c.IssueTokens(ctx, sess, keys.Keys[keys.Current], 3)
	must("issue tokens", err)
	auth := func(i int) []byte {
		b, err := toks[i].MarshalBinary()
		must("token", err)
		return b
	}
	mb, err := c.CreateMailbox(ctx, auth(0))
	must("create mailbox", err)
	sub, err := c.Subscribe(ctx, mb, 0)
	must("subscribe", err)
	_, err = c.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("sealed"), auth(1))
	must("send", err)
	select {
	case _, ok := <-sub.C:
		if !ok {
			t.Fatalf("subscription ended: %v", sub.Err())
		}
	case <-ctx.Done():
		t.Fatal("no push")
	}
	sub.Close()
	msgs, _, err := c.Fetch(ctx, mb, 0, 10)
	must("fetch", err)
	_, err = c.Ack(ctx, mb, []wire.MessageID{msgs[0].ID})
	must("ack", err)
	must("delete mailbox", c.DeleteMailbox(ctx, mb))
	v, err := kt.NewVerifierFromConfig(h.KTKeys.VKey, h.KT().Config())
	must("verifier", err)
	_, err = c.KTCheckpoint(ctx, v)
	must("kt checkpoint", err)
	_, err = c.KTConsistencyProof(ctx, 0)
	must("kt consistency", err)
	_, err = c.KTLookupBatch(ctx, v, []string{"bob", "alice"})
	must("kt lookup batch", err)
	// No SDK call sends KTCheckpoint (KTCheckpoint above asks for a
	// consistency proof from 0); a stranger's own code may.
	raw := h.Raw(t, "raw")
	if m, err := raw.RoundTrip(&wire.KTCheckpoint{}); err != nil {
		t.Fatalf("raw KTCheckpoint: %v", err)
	} else if _, ok := m.(*wire.KTProof); !ok {
		t.Fatalf("raw KTCheckpoint answered %T", m)
	}
	raw.QUIC.CloseWithError(0, "")
	_, err = c.KTTile(ctx, "checkpoint")
	must("kt tile", err)
	// A refused request: the token was spent by the Send above.
	if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("again"), auth(1)); err == nil {
		t.Fatal("a spent token was accepted")
	}

	alice.Close()
	bob.Close()
	c.Close()

	var evs []record.Event
	var taps []hostile.Event
	deadline := time.Now().Add(10 * time.Second)
	for {
		must("flush", obs.Flush())
		raw, err := os.ReadFile(path)
		must("read", err)
		_, evs, err = record.ReadObserver(bytes.NewReader(raw))
		must("the observer record does not read as lab/record's schema", err)
		taps = h.Events()
		diff := compareViews(evs, taps)
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the observer record and the tap disagree:\n%s", diff)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Every request kind is recorded, with the fields of its kind.
	seen := map[string][]record.Event{}
	for _, e := range evs {
		if e.Ev == record.EvRequest {
			seen[e.Kind] = append(seen[e.Kind], e)
		}
	}
	for _, k := range requestKinds() {
		if len(seen[wire.KindName(k)]) == 0 {
			t.Errorf("request kind %s (0x%02x) never appears in the observer record", wire.KindName(k), uint8(k))
		}
	}
	has := func(kind string, ok func(record.Event) bool, what string) {
		t.Helper()
		if !slices.ContainsFunc(seen[kind], ok) {
			t.Errorf("no %s request with %s", kind, what)
		}
	}
	full := func(e record.Event) bool { return len(e.Mailbox) == 2*wire.IDSize }
	has("CreateMailbox", func(e record.Event) bool { return full(e) && e.SendID != "" && e.Epoch != nil }, "mailbox, send_id and epoch")
	has("Send", func(e record.Event) bool { return full(e) && e.SendID != "" && e.Epoch != nil && e.Bucket > 0 }, "mailbox, send_id, epoch and bucket")
	for _, k := range []string{"Fetch", "Subscribe", "Ack", "DeleteMailbox"} {
		has(k, full, "mailbox")
	}
	has("KTPublish", func(e record.Event) bool { return e.Handle == "alice" && e.Account != "" }, "handle and account")
	has("KTLookup", func(e record.Event) bool { return e.Handle == "bob" }, "handle")
	has("KTLookupBatch", func(e record.Event) bool { return e.Handle == "bob,alice" }, "its labels")
	has("IssueTokens", func(e record.Event) bool { return e.Account != "" && e.N == 3 && e.Epoch != nil }, "account, n and epoch")
	has("AccountRequest", func(e record.Event) bool { return e.Account != "" }, "account (a registration's second record)")
	has("FetchKeyPackage", func(e record.Event) bool { return e.Handle == "bob" && e.Epoch != nil }, "handle and epoch")

	// The Send's mailbox is the receive ID the CreateMailbox made, and
	// the server's own IDs are what the tap saw on the wire.
	want := hex.EncodeToString(mb.ReceiveID[:])
	has("Send", func(e record.Event) bool { return e.Mailbox == want && e.SendID == hex.EncodeToString(mb.SendID[:]) }, "carol's mailbox, resolved from its send ID")
	has("CreateMailbox", func(e record.Event) bool { return e.Mailbox == want }, "carol's mailbox")
	var acked, subscribed, deliveredTo bool
	for _, e := range evs {
		switch {
		case e.Ev == record.EvAck && e.Mailbox == want && e.N == 1:
			acked = true
		case e.Ev == record.EvSubscribe && e.Mailbox == want:
			subscribed = true
		case e.Ev == record.EvDeliver && e.Mailbox == want:
			deliveredTo = true
		}
	}
	if !acked || !subscribed || !deliveredTo {
		t.Errorf("carol's mailbox: ack %v, subscribe %v, deliver %v in the record", acked, subscribed, deliveredTo)
	}
	t.Logf("%d events in the observer record, %d in the tap; %d request kinds", len(evs), len(taps), len(requestKinds()))
}

// compareViews returns "" when the observer record holds exactly what the
// tap saw: the same request records (connection, kind, bucket), the same
// Delivery and Error records sent (connection, bucket or code), an open
// event with the transport of every connection, and a close for each
// once all are closed. Otherwise it says what differs.
func compareViews(evs []record.Event, taps []hostile.Event) string {
	obsCount, tapCount := map[string]int{}, map[string]int{}
	opened := map[string]string{}
	closed := map[string]bool{}
	for _, e := range evs {
		switch e.Ev {
		case record.EvRequest:
			obsCount[fmt.Sprintf("%s request %s %d", e.Conn, e.Kind, e.Bucket)]++
		case record.EvDeliver:
			obsCount[fmt.Sprintf("%s deliver %d", e.Conn, e.Bucket)]++
		case record.EvError:
			obsCount[fmt.Sprintf("%s error %s", e.Conn, e.Code)]++
		case record.EvAck:
			obsCount[fmt.Sprintf("%s ack %d", e.Conn, e.N)]++
		case record.EvOpen:
			opened[e.Conn] = e.Transport
		case record.EvClose:
			closed[e.Conn] = true
		}
	}
	conns := map[string]bool{}
	for _, x := range taps {
		conn := fmt.Sprintf("c%d", x.Conn)
		conns[conn] = true
		switch {
		case x.FromClient:
			tapCount[fmt.Sprintf("%s request %s %d", conn, wire.KindName(x.Kind), x.Size)]++
		case x.Kind == wire.KindDelivery:
			tapCount[fmt.Sprintf("%s deliver %d", conn, x.Size)]++
		case x.Kind == wire.KindError:
			tapCount[fmt.Sprintf("%s error %s", conn, x.Message.(*wire.ErrorMessage).Code)]++
		case x.Kind == wire.KindAcked:
			tapCount[fmt.Sprintf("%s ack %d", conn, x.Message.(*wire.Acked).Deleted)]++
		}
	}
	var diff []string
	for k, n := range tapCount {
		if obsCount[k] != n {
			diff = append(diff, fmt.Sprintf("tap %d × %q, record %d", n, k, obsCount[k]))
		}
	}
	for k, n := range obsCount {
		if _, ok := tapCount[k]; !ok {
			diff = append(diff, fmt.Sprintf("record %d × %q, tap none", n, k))
		}
	}
	for c := range conns {
		if opened[c] != record.TransportUDP {
			diff = append(diff, fmt.Sprintf("connection %s: open with transport %q", c, opened[c]))
		}
		if !closed[c] {
			diff = append(diff, fmt.Sprintf("connection %s: no close", c))
		}
	}
	for c := range opened {
		if !conns[c] {
			diff = append(diff, fmt.Sprintf("connection %s opened in the record, unknown to the tap", c))
		}
	}
	slices.Sort(diff)
	if len(diff) > 20 {
		diff = append(diff[:20], fmt.Sprintf("... and %d more", len(diff)-20))
	}
	return strings.Join(diff, "\n")
}
