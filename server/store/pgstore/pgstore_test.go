package pgstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/server/store/pgstore"
	"github.com/quicprochat/qpc/server/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// quiet drops the store's log (each new database logs its migration).
var quiet = slog.New(slog.DiscardHandler)

func open(t testing.TB, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), url, store.Options{Logger: quiet, WakeKey: testWakeKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// TestConformance runs the store conformance suite on a real PostgreSQL,
// each subtest on a database of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, pgtest.DB(t)) })
}

// TestMigrateConcurrent: nodes starting at once on a new database all
// open it, and the schema is applied exactly once (the advisory lock);
// a later open applies nothing.
func TestMigrateConcurrent(t *testing.T) {
	url := pgtest.DB(t)
	const nodes = 6
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, nodes)
		opens = make([]*pgstore.Store, nodes)
	)
	for i := range nodes {
		wg.Go(func() {
			<-start
			opens[i], errs[i] = pgstore.Open(context.Background(), url, store.Options{Logger: quiet, WakeKey: testWakeKey})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: Open: %v", i, err)
			continue
		}
		opens[i].Close()
	}
	if t.Failed() {
		return
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	versions := func() []int {
		rows, err := conn.Query(ctx, "SELECT version FROM schema_version ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		v, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	want := make([]int, pgstore.SchemaVersion())
	for i := range want {
		want[i] = i + 1
	}
	if got := versions(); !slices.Equal(got, want) {
		t.Fatalf("schema_version after %d concurrent opens: %v, want %v", nodes, got, want)
	}
	open(t, url)
	if got := versions(); !slices.Equal(got, want) {
		t.Fatalf("schema_version after another open: %v, want %v", got, want)
	}

	// A database migrated by a newer build is refused, not misread.
	if _, err := conn.Exec(ctx, "INSERT INTO schema_version (version) VALUES ($1)", len(want)+1); err != nil {
		t.Fatal(err)
	}
	if _, err := pgstore.Open(ctx, url, store.Options{WakeKey: testWakeKey}); !errors.Is(err, pgstore.ErrNewerSchema) {
		t.Fatalf("Open of a newer schema: %v, want ErrNewerSchema", err)
	}
}

// TestTwoNodes: two stores (two pools, as two qpc-server nodes) on one
// database. A message sent through both at once, as a client's retry to
// another node would race its slow first attempt, is stored once: one
// Put is fresh, the other its Duplicate with the same seq. A token spent
// through both at once pays for one write.
func TestTwoNodes(t *testing.T) {
	url := pgtest.DB(t)
	a, b := open(t, url), open(t, url)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := store.Mailbox{Created: t0}
	rand.Read(m.ReceiveID[:])
	rand.Read(m.SendID[:])
	if err := a.CreateMailbox(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	// The other node sees it at once, and refuses it again.
	if err := b.CreateMailbox(ctx, m, nil); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second node created the same mailbox: %v", err)
	}
	const n = 100
	type result struct {
		r   store.PutResult
		err error
	}
	for i := range n {
		var id [store.MessageIDSize]byte
		rand.Read(id[:])
		spend := &store.Spend{Until: t0.Add(time.Hour)}
		rand.Read(spend.Key[:])
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			res   [2]result
		)
		for j, node := range []*pgstore.Store{a, b} {
			wg.Go(func() {
				<-start
				r, err := node.Put(ctx, m.SendID, id, id[:], store.Quota{}, t0, spend)
				res[j] = result{r, err}
			})
		}
		close(start)
		wg.Wait()
		for j, r := range res {
			if r.err != nil {
				t.Fatalf("message %d through node %d: %v", i, j, r.err)
			}
		}
		if res[0].r.Seq != res[1].r.Seq || res[0].r.Duplicate == res[1].r.Duplicate || res[0].r.Seq != uint64(i+1) {
			t.Fatalf("message %d sent through both nodes: %+v and %+v; want seq %d once fresh, once Duplicate", i, res[0].r, res[1].r, i+1)
		}
		// The same token on another message, through either node: spent.
		var other [store.MessageIDSize]byte
		rand.Read(other[:])
		if _, err := []*pgstore.Store{a, b}[i%2].Put(ctx, m.SendID, other, []byte("x"), store.Quota{}, t0, spend); !errors.Is(err, store.ErrSpent) {
			t.Fatalf("a token spent on message %d paid for another through node %d: %v", i, i%2, err)
		}
	}
	msgs, more, err := b.Fetch(ctx, m.ReceiveID, 0, 2*n, t0)
	if err != nil || more || len(msgs) != n {
		t.Fatalf("fetched %d messages (more %v, %v), want %d", len(msgs), more, err, n)
	}
	for i, msg := range msgs {
		if msg.Seq != uint64(i+1) || !bytes.Equal(msg.Envelope, msg.ID[:]) {
			t.Fatalf("message %d: seq %d, envelope does not match its ID", i, msg.Seq)
		}
	}
	// An ack through one node is seen by the other, and a retry after
	// it is still a duplicate there.
	if k, err := a.Ack(ctx, m.ReceiveID, [][store.MessageIDSize]byte{msgs[0].ID}); err != nil || k != 1 {
		t.Fatalf("Ack: %d, %v", k, err)
	}
	if r, err := b.Put(ctx, m.SendID, msgs[0].ID, []byte("retry"), store.Quota{}, t0, nil); err != nil || !r.Duplicate || r.Seq != 1 {
		t.Fatalf("retry of an acked message through the other node: %+v, %v", r, err)
	}
	tot, err := a.Totals(ctx)
	if err != nil || tot != (store.Totals{Mailboxes: 1, Messages: n - 1, Bytes: (n - 1) * store.MessageIDSize}) {
		t.Fatalf("Totals: %+v, %v", tot, err)
	}
}

// TestOversize: a database holding envelopes longer than the limit is
// refused at Open, as the bbolt store refuses its file.
func TestOversize(t *testing.T) {
	url := pgtest.DB(t)
	s := open(t, url)
	ctx := context.Background()
	m := store.Mailbox{Created: time.Now()}
	rand.Read(m.ReceiveID[:])
	rand.Read(m.SendID[:])
	if err := s.CreateMailbox(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, m.SendID, [16]byte{1}, make([]byte, 3000), store.Quota{}, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := pgstore.Open(ctx, url, store.Options{MaxEnvelope: 2000, WakeKey: testWakeKey})
	var over *store.OversizeError
	if !errors.As(err, &over) || over.Count != 1 || over.Largest != 3000 {
		t.Fatalf("Open with a smaller limit: %v, want an OversizeError for one envelope of 3000 bytes", err)
	}
	s2, err := pgstore.Open(ctx, url, store.Options{MaxEnvelope: 3000, WakeKey: testWakeKey})
	if err != nil {
		t.Fatalf("Open with a limit that fits: %v", err)
	}
	s2.Close()
}
