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

	reader, channel, _ := xnDBReader(t, db)

	sender, owner := xnDial(t, a), xnDial(t, b)
	mb, sub := xnSubscribed(t, owner)
	if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(0), nil); err != nil {
		t.Fatal(err)
	}
	xnPushed(t, sub, envelope(0), "a send through A to a subscriber on B")
	// What the reader saw: 's', the sending node's tag, the mailbox's
	// name in the wakes (its wake tag; before ADR 0038's keyed tags, its
	// receive ID). It replays that name as a deletion.
	var seen string
	for !strings.HasPrefix(seen, "s") {
		n, err := reader.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("the reader heard no wake-up: %v", err)
		}
		seen = n.Payload
	}
	forged := "d" + "0123456789abcdef" + seen[1+16:]
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

// TestAttackDBListenerLearnsNoReceiveID plays a database role that may
// only connect (LISTEN needs no privilege): it listens on the nodes'
// wake-up channel while messages go through node A to subscribers on
// node B and a mailbox is deleted, and then holds every payload against
// the mailboxes of the tables (read here with the store's role, as a
// role that can also read the tables would). No payload may hold a
// receive ID or a send ID, whole or its first 16 bytes: the wakes name
// a mailbox by a keyed tag (ADR 0038, "Keyed tags") that only the
// nodes, holding tokens.key, can tie to a mailbox; nor may two payloads
// of one node carry the same node mark.
func TestAttackDBListenerLearnsNoReceiveID(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	a, b := startXNNode(t, db, "qpc-tags-a", nil), startXNNode(t, db, "qpc-tags-b", nil)
	xnWaitFor(t, "B's wake-up listener up", func() bool { return xnMetric(t, b.metrics, "qpc_store_wake_listener_up") == 1 })
	xnWaitFor(t, "A's wake-up listener up", func() bool { return xnMetric(t, a.metrics, "qpc_store_wake_listener_up") == 1 })
	ctx := ctxT(t)
	reader, channel, ownRole := xnDBReader(t, db)
	if ownRole {
		// The premise: the reader cannot read the tables itself.
		table := pgx.Identifier{strings.TrimPrefix(channel, "qpc_wake."), "mailboxes"}.Sanitize()
		var pgErr *pgconn.PgError
		if _, err := reader.Exec(ctx, "SELECT count(*) FROM "+table); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Fatalf("the reader's role reads the mailboxes table (%v): the test's premise fails", err)
		}
	}

	sender, owner := xnDial(t, a), xnDial(t, b)
	const boxes = 3
	for i := range boxes {
		mb, sub := xnSubscribed(t, owner)
		if _, err := sender.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), nil); err != nil {
			t.Fatal(err)
		}
		xnPushed(t, sub, envelope(i), "a send through A to a subscriber on B")
	}
	// A deletion through B, which A's listener hears of.
	gone, err := owner.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.DeleteMailbox(ctx, gone); err != nil {
		t.Fatal(err)
	}

	// Every payload the reader heard: boxes stores and one deletion.
	var payloads []string
	stores, deletes := 0, 0
	for stores < boxes || deletes < 1 {
		n, err := reader.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("the reader heard %d stores and %d deletions of %d and 1: %v", stores, deletes, boxes, err)
		}
		payloads = append(payloads, n.Payload)
		switch {
		case strings.HasPrefix(n.Payload, "s"):
			stores++
		case strings.HasPrefix(n.Payload, "d"):
			deletes++
		}
	}

	// Against the tables: every receive and send ID the store holds, and
	// the deleted mailbox's.
	admin, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	rows, err := admin.Query(ctx, "SELECT receive_id, send_id FROM mailboxes")
	if err != nil {
		t.Fatal(err)
	}
	ids := [][]byte{gone.ReceiveID[:], gone.SendID[:]}
	for rows.Next() {
		var rid, sid []byte
		if err := rows.Scan(&rid, &sid); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rid, sid)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ids) < 2+2*boxes {
		t.Fatalf("the tables hold %d IDs, want at least %d", len(ids)-2, 2*boxes)
	}
	for _, p := range payloads {
		for _, id := range ids {
			for _, part := range [][]byte{id, id[:16]} {
				if strings.Contains(strings.ToLower(p), hex.EncodeToString(part)) {
					t.Fatalf("a wake-up payload a role without table privileges heard names a mailbox of the tables (%x...): %.40s...", id[:4], p)
				}
			}
		}
	}

	// The stores all came through A, yet their node marks are unrelated:
	// the listener cannot tell which payloads one node sent.
	marks := map[string]bool{}
	for _, p := range payloads {
		if strings.HasPrefix(p, "s") && len(p) >= 17 {
			if marks[p[1:17]] {
				t.Fatalf("two payloads carry the node mark %s", p[1:17])
			}
			marks[p[1:17]] = true
		}
	}
}

// xnDBReader connects to db as a login of its own with no privilege
// beyond connecting (where the test may create roles: pgtest's own
// cluster; else as the store's role, and ownRole is false), LISTENing on
// the nodes' wake-up channel.
func xnDBReader(t *testing.T, db string) (reader *pgx.Conn, channel string, ownRole bool) {
	t.Helper()
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
	reader, err = pgx.Connect(ctx, readerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close(context.Background()) })
	channel = "qpc_wake." + schema
	if _, err := reader.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return reader, channel, readerURL != db
}
