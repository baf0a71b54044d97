package e2e

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// TestDiskFull: the store file is capped; sends fail with a clear,
// retryable code once it is full, nothing acknowledged is lost, and sends
// succeed again when acks free space.
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	id, err := server.CreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "qpc.db"), store.Options{MaxSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Options{Identity: id, Store: st, Authorizer: server.OpenAccess{},
		Quota: store.Quota{MaxMessages: 1 << 20, MaxBytes: 1 << 40}})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t}
	pcAddr := serveOn(t, srv)
	ts.addr = id.Address(pcAddr).String()
	ctx := ctxT(t)
	c := dial(t, ts, protocol.Options{MaxAttempts: 1})
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := bytes.Repeat([]byte{0xab}, 15000)
	var acked []wire.MessageID
	var full error
	for range 2000 {
		id := protocol.NewMessageID()
		if _, err := c.Send(ctx, mb.SendID, id, env, nil); err != nil {
			full = err
			break
		}
		acked = append(acked, id)
	}
	if full == nil {
		t.Fatal("a 4 MiB store never filled up")
	}
	if !isCode(full, wire.CodeUnavailable) {
		t.Fatalf("send to a full store: %v, want UNAVAILABLE", full)
	}
	// Everything acknowledged is still there.
	var got []protocol.Message
	for after := uint64(0); ; {
		msgs, more, err := c.Fetch(ctx, mb, after, 1000)
		if err != nil {
			t.Fatalf("fetch from a full store: %v", err)
		}
		got = append(got, msgs...)
		if !more {
			break
		}
		after = msgs[len(msgs)-1].Seq
	}
	if len(got) != len(acked) {
		t.Fatalf("%d acknowledged, %d stored", len(acked), len(got))
	}
	// Space returns: acks free pages, and sends succeed again.
	if _, err := c.Ack(ctx, mb, acked[:len(acked)/2]); err != nil {
		t.Fatalf("ack on a full store: %v", err)
	}
	if _, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), env, nil); err != nil {
		t.Fatalf("send after space returned: %v", err)
	}
}

// serveOn serves srv on 127.0.0.1 until the test ends.
func serveOn(t *testing.T, srv *server.Server) string {
	t.Helper()
	pc, err := listenLocal()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pc) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return pc.LocalAddr().String()
}

// TestSlowReaderBlocksNoOne: a subscriber that never reads its stream
// while its mailbox fills does not slow anyone else down.
func TestSlowReaderBlocksNoOne(t *testing.T) {
	ts := startServer(t, func(o *server.Options) { o.RequestTimeout = 2 * time.Second })
	ctx := ctxT(t)
	owner := dial(t, ts, protocol.Options{})
	stuck, err := owner.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := dial(t, ts, protocol.Options{})
	mb, err := other.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	sendFetch := func(i int) time.Duration {
		start := time.Now()
		if _, err := other.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), nil); err != nil {
			t.Fatalf("send %d while a reader stalls: %v", i, err)
		}
		if _, _, err := other.Fetch(ctx, mb, 0, 1); err != nil {
			t.Fatalf("fetch %d while a reader stalls: %v", i, err)
		}
		return time.Since(start)
	}
	// The slowest of 10 before anyone stalls: this machine, now.
	var quiet time.Duration
	for i := range 10 {
		quiet = max(quiet, sendFetch(i))
	}
	// A raw client subscribes and then never reads a byte.
	rawSubscribe(t, ts, stuck)

	// Fill the stuck mailbox with large envelopes while others work.
	sender := dial(t, ts, protocol.Options{})
	big := bytes.Repeat([]byte{1}, 100000)
	go func() {
		for range 60 {
			if _, err := sender.Send(ctx, stuck.SendID, protocol.NewMessageID(), big, nil); err != nil {
				return
			}
		}
	}()
	// A second, or four times the slowest before the stall when a loaded
	// machine makes that slow (one held up by the stalled reader would
	// wait for its 2 s request timeout).
	var worst time.Duration
	for i := range 50 {
		worst = max(worst, sendFetch(10+i))
	}
	if worst > max(time.Second, 4*quiet) {
		t.Fatalf("a send+fetch took %v while another client's subscription stalled (%v before)", worst, quiet)
	}
	// The stuck mailbox still holds everything for a reader that reads,
	// read in pages of 10 (one page of 6 MB did not fit in the 2 s
	// request timeout on a loaded machine), once the sender is done
	// (30 s: 60 sends of 100 kB are slow there too).
	deadline := time.Now().Add(30 * time.Second)
	for {
		held := 0
		for after, more := uint64(0), true; more; {
			var msgs []protocol.Message
			msgs, more, err = owner.Fetch(ctx, stuck, after, 10)
			if err != nil {
				t.Fatal(err)
			}
			held += len(msgs)
			if len(msgs) > 0 {
				after = msgs[len(msgs)-1].Seq
			}
		}
		if held == 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stuck mailbox holds %d of 60 messages", held)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
