package pgaccounts_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/accounts/accountstest"
	"github.com/quicprochat/qpc/server/accounts/pgaccounts"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/server/store/pgstore"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var bg = context.Background()

var quiet = slog.New(slog.DiscardHandler)

// wakeKey is the mailbox store's wake key (ADR 0038), which pgstore.Open
// requires; any 32 bytes do for a store opened beside the accounts.
var wakeKey = bytes.Repeat([]byte{0x77}, store.WakeKeySize)

func open(t testing.TB, url string) *pgaccounts.Store {
	t.Helper()
	s, err := pgaccounts.Open(context.Background(), url, pgaccounts.Options{Logger: quiet})
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

// TestConformance runs the account store conformance suite on a real
// PostgreSQL, each subtest on a database of its own.
func TestConformance(t *testing.T) {
	accountstest.Run(t, func(t *testing.T) accounts.Store { return open(t, pgtest.DB(t)) })
}

// TestTwoNodes runs the suite with every operation of a subtest spread
// over two stores (two pools, as two qpc-server nodes) on one database:
// the atomicity the suite checks (one registration of a username, the
// quota never overdrawn, a KeyPackage taken once) holds across nodes.
func TestTwoNodes(t *testing.T) {
	accountstest.Run(t, func(t *testing.T) accounts.Store {
		url := pgtest.DB(t)
		return &alternate{nodes: [2]*pgaccounts.Store{open(t, url), open(t, url)}}
	})
}

// TestBesideMailboxes: the account store and the mailbox store open the
// same database, at once from several nodes, each migrating its own
// tables under its own version table; both work after.
func TestBesideMailboxes(t *testing.T) {
	url := pgtest.DB(t)
	const nodes = 4
	var wg sync.WaitGroup
	errs := make([]error, 2*nodes)
	start := make(chan struct{})
	for i := range nodes {
		wg.Go(func() {
			<-start
			a, err := pgaccounts.Open(context.Background(), url, pgaccounts.Options{Logger: quiet})
			if err == nil {
				a.Close()
			}
			errs[2*i] = err
		})
		wg.Go(func() {
			<-start
			m, err := pgstore.Open(context.Background(), url, store.Options{Logger: quiet, WakeKey: wakeKey})
			if err == nil {
				m.Close()
			}
			errs[2*i+1] = err
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	versions := func(table string) []int {
		rows, err := conn.Query(ctx, "SELECT version FROM "+table+" ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		v, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	upTo := func(n int) []int {
		var v []int
		for i := range n {
			v = append(v, i+1)
		}
		return v
	}
	if got, want := versions("account_schema_version"), upTo(pgaccounts.SchemaVersion()); !slices.Equal(got, want) {
		t.Fatalf("account_schema_version = %v, want %v", got, want)
	}
	if got, want := versions("schema_version"), upTo(pgstore.SchemaVersion()); !slices.Equal(got, want) {
		t.Fatalf("schema_version = %v, want %v", got, want)
	}
	// A database whose account schema a newer build migrated is refused.
	if _, err := conn.Exec(ctx, "INSERT INTO account_schema_version (version) VALUES ($1)", pgaccounts.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := pgaccounts.Open(ctx, url, pgaccounts.Options{Logger: quiet}); !errors.Is(err, pgaccounts.ErrNewerSchema) {
		t.Fatalf("Open of a newer account schema: %v, want ErrNewerSchema", err)
	}
	// The mailbox store does not care.
	open := func() error {
		m, err := pgstore.Open(ctx, url, store.Options{Logger: quiet, WakeKey: wakeKey})
		if err == nil {
			m.Close()
		}
		return err
	}
	if err := open(); err != nil {
		t.Fatalf("the mailbox store beside a newer account schema: %v", err)
	}
}
