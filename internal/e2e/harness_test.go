package e2e

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
)

// clock is a settable time source shared by a test and its server.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is one running server over a data directory.
type testServer struct {
	t     *testing.T
	dir   string
	addr  string // qpc:// address
	host  string // 127.0.0.1:port, kept across restarts
	srv   *server.Server
	store *store.Bolt
	clock *clock
	logs  *syncBuffer
	opts  server.Options
	done  chan error

	// secure servers require tokens and serve accounts, like production.
	secure   bool
	accounts *accounts.Service
	issuer   *tokens.Issuer
}

// tokenEpoch is the token epoch of secure test servers.
const tokenEpoch = time.Hour

// startSecureServer runs a server that requires delivery tokens and serves
// accounts, with its own token secret and OPAQUE keys in its data dir.
func startSecureServer(t *testing.T, mutate func(*server.Options)) *testServer {
	t.Helper()
	return startServerWith(t, true, mutate)
}

// startServer runs a server on 127.0.0.1 with a real bbolt store. mutate
// adjusts the options before start.
func startServer(t *testing.T, mutate func(*server.Options)) *testServer {
	t.Helper()
	return startServerWith(t, false, mutate)
}

func startServerWith(t *testing.T, secure bool, mutate func(*server.Options)) *testServer {
	t.Helper()
	ts := &testServer{t: t, dir: t.TempDir(), clock: &clock{}, logs: &syncBuffer{}, host: "127.0.0.1:0", secure: secure}
	if _, err := server.CreateIdentity(ts.dir); err != nil {
		t.Fatal(err)
	}
	ts.opts = server.Options{
		Logger: slog.New(slog.NewJSONHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Now:    ts.clock.now,
	}
	if mutate != nil {
		mutate(&ts.opts)
	}
	ts.start()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) start() {
	t := ts.t
	t.Helper()
	id, err := server.LoadIdentity(ts.dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(ts.dir, "qpc.db"), store.Options{OnCommit: server.CommitObserver(ts.opts.Metrics)})
	if err != nil {
		t.Fatal(err)
	}
	if ts.opts.Metrics != nil {
		server.WatchStore(ts.opts.Metrics, st)
	}
	opts := ts.opts
	opts.Identity, opts.Store = id, st
	if ts.secure {
		pin := id.Pin()
		keys, err := accounts.LoadOrCreateKeys(ts.dir, pin[:])
		if err != nil {
			t.Fatal(err)
		}
		// Every test user registers and logs in from 127.0.0.1, which the
		// per-source limits count as one client: give that client room.
		ts.accounts, err = accounts.Open(ts.dir, keys, accounts.Options{
			Now: ts.clock.now, SourceRate: 1000, SourceBurst: 1000,
			RegisterRate: 1000, RegisterBurst: 1000, RegisterSourceRate: 1000, RegisterSourceBurst: 1000,
		})
		if err != nil {
			t.Fatal(err)
		}
		secret, err := server.LoadOrCreateTokenSecret(ts.dir)
		if err != nil {
			t.Fatal(err)
		}
		ts.issuer, err = tokens.NewIssuer(secret, tokens.WithEpochLength(tokenEpoch), tokens.WithClock(ts.clock.now))
		if err != nil {
			t.Fatal(err)
		}
		opts.Accounts, opts.Tokens, opts.TokenEpoch = ts.accounts, ts.issuer, tokenEpoch
	}
	srv, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := listenAgain(ts.host)
	if err != nil {
		t.Fatal(err)
	}
	ts.host = pc.LocalAddr().String()
	ts.addr = id.Address(ts.host).String()
	ts.srv, ts.store, ts.done = srv, st, make(chan error, 1)
	go func() { ts.done <- srv.Serve(pc) }()
}

func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		ts.t.Errorf("shutdown: %v", err)
	}
	if err := <-ts.done; err != nil {
		ts.t.Errorf("serve: %v", err)
	}
	if err := ts.store.Close(); err != nil {
		ts.t.Errorf("store close: %v", err)
	}
	if ts.accounts != nil {
		if err := ts.accounts.Close(); err != nil {
			ts.t.Errorf("accounts close: %v", err)
		}
		ts.accounts = nil
	}
	ts.srv = nil
}

func (ts *testServer) restart() {
	ts.stop()
	ts.start()
}

func dial(t *testing.T, ts *testServer, opts protocol.Options) *protocol.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 8
		opts.BaseBackoff = 20 * time.Millisecond
		opts.MaxBackoff = 200 * time.Millisecond
	}
	c, err := protocol.Dial(ctx, ts.addr, opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	// One deadline for a whole test's requests: generous for a loaded
	// 2-core machine (the race run on one, load 20, took 65 s for
	// TestMessengerBigGroup and failed six tests on 20 s), as in
	// internal/hostile; a hang still fails, later.
	d := time.Minute
	if raceDetector {
		d = 3 * time.Minute // everything runs several times slower
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// listenAgain listens on host, which a restart takes from the run
// before: another process's ephemeral socket may hold the released port
// for a while, so "address already in use" is retried for up to 30 s.
func listenAgain(host string) (net.PacketConn, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pc, err := net.ListenPacket("udp", host)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return pc, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
