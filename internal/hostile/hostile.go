package hostile

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
)

// Options adjust a hostile server before it starts.
type Options struct {
	// Server adjusts the server's options (the store, identity, accounts,
	// tokens, KT and Tap are set by Start).
	Server func(*server.Options)
	// WrapStore wraps the mailbox store the server uses: a store that
	// keeps what it should delete, drops or reorders.
	WrapStore func(store.Store) store.Store
	// KTEpoch is the key-transparency epoch interval; default 200 ms.
	KTEpoch time.Duration
	// Accounts adjusts the account service's options. The defaults are
	// production's, and every test user comes from 127.0.0.1, one source
	// to the per-source limits: a test that registers more than a handful
	// of users should raise them (RoomyAccounts does).
	Accounts func(*accounts.Options)
	// KT adjusts the key-transparency directory's options (a witness
	// policy, say) once its keys exist; a witness policy set here is
	// also in Pin.
	KT func(*server.KTKeys, *kt.DirectoryOptions)
	// Untapped runs the server without the tap: no Events, no Rewrite.
	// The tap keeps the bytes of each request record until it is whole,
	// so a test that measures what half-sent records cost the server's
	// memory must not count the tap's copy too.
	Untapped bool
}

// RoomyAccounts lifts the per-source and global registration and login
// limits, for tests that register many users from one address.
func RoomyAccounts(o *accounts.Options) {
	o.SourceRate, o.SourceBurst = 1000, 1000
	o.RegisterRate, o.RegisterBurst = 1000, 1000
	o.RegisterSourceRate, o.RegisterSourceBurst = 1000, 1000
}

// TokenEpoch is the token epoch of a hostile server.
const TokenEpoch = time.Hour

// Clock is the settable time of a hostile server, its token issuer and
// accounts; clients keep the real time.
type Clock struct{ offset atomic.Int64 }

// Now is the server's time.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the server's time forward.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// Server is a running hostile server.
type Server struct {
	t      testing.TB
	Dir    string
	Clock  *Clock
	ID     *server.Identity
	Srv    *server.Server
	Issuer *tokens.Issuer
	KTKeys *server.KTKeys

	store    store.Store
	bolt     *store.Bolt
	accounts *accounts.Service
	kt       *kt.Directory
	// witnessPolicy is the policy of Options.KT, in Pin.
	witnessPolicy string
	policy        padding.Policy
	logs          *syncBuffer

	mu      sync.Mutex
	tags    map[string]string // listener address -> tag
	addrs   map[string]string // tag -> qpc:// address
	streams map[uint64]int    // connection ID -> streams seen
	events  []Event
	hooks   []func(*Exchange)
	serving sync.WaitGroup
}

// Start runs a hostile server on 127.0.0.1 and stops it when the test ends.
// Until a test calls Rewrite or ForkKT it behaves honestly.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.KTEpoch == 0 {
		opts.KTEpoch = 200 * time.Millisecond
	}
	h := &Server{
		t: t, Dir: t.TempDir(), Clock: &Clock{}, logs: &syncBuffer{},
		tags: map[string]string{}, addrs: map[string]string{}, streams: map[uint64]int{},
	}
	fatal := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	_, err := server.CreateIdentity(h.Dir)
	fatal(err)
	h.ID, err = server.LoadIdentity(h.Dir)
	fatal(err)
	h.bolt, err = store.Open(filepath.Join(h.Dir, "qpc.db"), store.Options{})
	fatal(err)
	t.Cleanup(func() { h.bolt.Close() })
	h.store = h.bolt
	if opts.WrapStore != nil {
		h.store = opts.WrapStore(h.bolt)
	}
	pin := h.ID.Pin()
	akeys, err := accounts.LoadOrCreateKeys(h.Dir, pin[:])
	fatal(err)
	ao := accounts.Options{Now: h.Clock.Now}
	if opts.Accounts != nil {
		opts.Accounts(&ao)
	}
	h.accounts, err = accounts.Open(h.Dir, akeys, ao)
	fatal(err)
	t.Cleanup(func() { h.accounts.Close() })
	secret, err := server.LoadOrCreateTokenSecret(h.Dir)
	fatal(err)
	h.Issuer, err = tokens.NewIssuer(secret, tokens.WithEpochLength(TokenEpoch), tokens.WithClock(h.Clock.Now))
	fatal(err)

	ktDir := filepath.Join(h.Dir, "kt")
	fatal(os.MkdirAll(ktDir, 0o700))
	h.KTKeys, err = server.LoadOrCreateKTKeys(ktDir)
	fatal(err)
	ktOpts := kt.DirectoryOptions{
		Dir: ktDir, LogSigner: h.KTKeys.Signer, LogVerifier: h.KTKeys.Verifier, VRFKey: h.KTKeys.VRF,
		EpochInterval: opts.KTEpoch, Logger: quiet(),
	}
	if opts.KT != nil {
		opts.KT(h.KTKeys, &ktOpts)
		if ktOpts.WitnessPolicy.Required() {
			h.witnessPolicy = ktOpts.WitnessPolicy.Text()
		}
	}
	h.kt, err = kt.OpenDirectory(context.Background(), ktOpts)
	fatal(err)
	h.kt.Start()
	t.Cleanup(func() { h.kt.Close() })

	so := server.Options{
		Logger: slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Now:    h.Clock.Now,
	}
	if opts.Server != nil {
		opts.Server(&so)
	}
	so.Identity, so.Store, so.Accounts = h.ID, h.store, h.accounts
	so.Tokens, so.TokenEpoch, so.KT, so.Tap = h.Issuer, TokenEpoch, h.kt, h.tap
	if opts.Untapped {
		so.Tap = nil
	}
	if so.Policy.Max() == 0 {
		so.Policy = padding.Default
	}
	h.policy = so.Policy
	h.Srv, err = server.New(so)
	fatal(err)
	t.Cleanup(h.stop)

	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan struct{})
	go func() {
		defer close(published)
		server.PublishTokenKeys(ctx, h.kt, h.Issuer, TokenEpoch, quiet())
	}()
	t.Cleanup(func() { cancel(); <-published })
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	fatal(protocol.WaitTokenKey(wctx, h.Addr("setup"), h.Pin(), protocol.Options{Policy: h.policy}, 50*time.Millisecond))
	return h
}

func (h *Server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Srv.Shutdown(ctx); err != nil {
		h.t.Errorf("hostile: shutdown: %v", err)
	}
	h.serving.Wait()
}

// Addr returns the qpc:// address of a listener of this server that tags
// every connection through it with tag, opening it on first use.
func (h *Server) Addr(tag string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a, ok := h.addrs[tag]; ok {
		return a
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	host := pc.LocalAddr().String()
	h.tags[host] = tag
	a := h.ID.Address(host).String()
	h.addrs[tag] = a
	h.serving.Add(1)
	go func() {
		defer h.serving.Done()
		if err := h.Srv.Serve(pc); err != nil {
			h.t.Errorf("hostile: serve %s: %v", tag, err)
		}
	}()
	return a
}

// Pin is what clients pin of the key-transparency log.
func (h *Server) Pin() protocol.KTPin {
	cfg := h.kt.Config()
	return protocol.KTPin{VKey: h.KTKeys.VKey, VRFKey: cfg.VRFPublicKey, ConfigHash: cfg.Hash(), WitnessPolicy: h.witnessPolicy}
}

// KT is the honest key-transparency directory the server runs.
func (h *Server) KT() *kt.Directory { return h.kt }

// Store is the mailbox store as the server uses it (wrapped, if
// Options.WrapStore was set).
func (h *Server) Store() store.Store { return h.store }

// Policy is the padding policy the server announces honestly.
func (h *Server) Policy() padding.Policy { return h.policy }

// Logs is what the server logged (JSON lines, Info and above).
func (h *Server) Logs() string { return h.logs.String() }

// Rewrite adds a hook that sees every record the server is about to send,
// after the hooks added before it.
func (h *Server) Rewrite(f func(*Exchange)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks = append(h.hooks, f)
}

func (h *Server) rewrite(x *Exchange) {
	h.mu.Lock()
	hooks := h.hooks
	h.mu.Unlock()
	for _, f := range hooks {
		if x.Drop || x.Response == nil {
			break
		}
		f(x)
	}
}

func (h *Server) record(e Event) {
	e.Time = time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

// Events returns a copy of everything the server saw and sent so far.
func (h *Server) Events() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

// ClientOptions are messenger options for a fresh home: a cheap KDF and a
// quiet logger, with retries suited to loopback.
func (h *Server) ClientOptions(t testing.TB) client.Options {
	return client.Options{
		Home: t.TempDir(), Passphrase: []byte("local passphrase"),
		KDF:    &state.Options{Time: 1, MemoryKiB: 64, Threads: 1},
		Dial:   protocol.Options{MaxAttempts: 8, BaseBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Policy: h.policy},
		Logger: quiet(),
		// Sends never refill the wallet; a test that follows, or calls
		// StartRefills, gets its refills within a fraction of a second.
		RefillMean: 200 * time.Millisecond,
	}
}

// NewUser initialises a messenger that reaches the server through
// Addr(tag) and registers handle.
func (h *Server) NewUser(t testing.TB, tag, handle string) *client.Client {
	t.Helper()
	return h.NewUserWith(t, tag, handle, h.ClientOptions(t))
}

// NewUserWith is NewUser with options.
func (h *Server) NewUserWith(t testing.TB, tag, handle string, opts client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Init(ctx, h.Addr(tag), h.Pin(), opts)
	if err != nil {
		t.Fatalf("init %s: %v", handle, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(ctx, handle, []byte("password of "+handle)); err != nil {
		t.Fatalf("register %s: %v", handle, err)
	}
	return c
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
