package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/pgtest"
)

// TestHostileDBRoleForgedDeletionKeepsSubscription plays a database
// role that may only connect (a monitoring or reporting login: LISTEN
// and NOTIFY need no privilege on any table). It listens on the nodes'
// wake-up channel, learns a mailbox's receive ID from the notification
// of a send to it, and notifies a forged deletion of that mailbox. The
// mailbox exists: its subscriber on node B must keep its subscription
// and get the next message, not be told NOT_FOUND ("mailbox deleted"),
// which a client takes for the end of its mailbox. A wake-up is a hint
// to read the store, never the store's word.
func TestHostileDBRoleForgedDeletionKeepsSubscription(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	a, b := startXNNode(t, db, "qpc-forge-a", nil), startXNNode(t, db, "qpc-forge-b", nil)
	xnWaitFor(t, "B's wake-up listener up", func() bool { return xnMetric(t, b.metrics, "qpc_store_wake_listener_up") == 1 })
	ctx := ctxT(t)

	// The reader's own login, with no privilege beyond connecting, where
	// the test may create roles (pgtest's own cluster); else the store's.
	admin, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var schema string
	if err := admin.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	readerURL := db
	var tag [6]byte
	rand.Read(tag[:])
	role := "qpc_reader_" + hex.EncodeToString(tag[:])
	var pgErr *pgconn.PgError
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err == nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if c, err := pgx.Connect(ctx, db); err == nil {
				c.Exec(ctx, "DROP ROLE IF EXISTS "+role)
				c.Close(ctx)
			}
		})
		u, err := url.Parse(db)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User(role)
		readerURL = u.String()
	} else if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("creating the reader's role: %v", err)
	}
	t.Logf("the reader connects as %s", map[bool]string{true: "the store's role", false: "a role of its own"}[readerURL == db])
	reader, err := pgx.Connect(ctx, readerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(ctx)
	channel := "qpc_wake." + schema
	if _, err := reader.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}

	sender, owner := xnDial(t, a), xnDial(t, b)
	mb, sub := xnSubscribed(t, owner)
	if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(0), nil); err != nil {
		t.Fatal(err)
	}
	xnPushed(t, sub, envelope(0), "a send through A to a subscriber on B")
	// What the reader saw: 's', the sending node's tag, the receive ID.
	var seen string
	for !strings.HasPrefix(seen, "s") || !strings.HasSuffix(seen, hex.EncodeToString(mb.ReceiveID[:])) {
		n, err := reader.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("the reader heard no wake-up: %v", err)
		}
		seen = n.Payload
	}
	forged := "d" + "0123456789abcdef" + hex.EncodeToString(mb.ReceiveID[:])
	if _, err := reader.Exec(ctx, "SELECT pg_notify($1, $2)", channel, forged); err != nil {
		t.Fatal(err)
	}
	// The forged deletion reaches B before the next send's wake-up
	// (PostgreSQL delivers in commit order, B's listener in turn).
	if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(1), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m, ok := <-sub.C:
		if !ok {
			t.Fatalf("a forged notification ended the subscription of a mailbox that exists: %v", sub.Err())
		}
		if string(m.Envelope) != string(envelope(1)) {
			t.Fatal("pushed the wrong envelope")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing pushed within 20 s after the forged deletion")
	}
}
