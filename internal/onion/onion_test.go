package onion

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/tornet"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tor"
	"github.com/quicprochat/qpc/wire"
)

// The private network is shared by the tests of this package (it takes
// 15-25 s to start) and stopped by TestMain, or by its watchdog.
var (
	netOnce  sync.Once
	sharedNW *tornet.Network
	netErr   error
	socks    string // a plain tor client's SOCKS port, as a system tor offers
)

func network(t testing.TB) (*tornet.Network, string) {
	t.Helper()
	netOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sharedNW, netErr = tornet.New(ctx, tornet.Options{Exit: true, Logf: log.Printf})
		if netErr == nil {
			socks, netErr = sharedNW.StartClient(ctx, "client")
		}
	})
	if netErr != nil {
		t.Fatalf("private tor network: %v", netErr)
	}
	return sharedNW, socks
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedNW != nil {
		sharedNW.Close()
	}
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// onionServer is an in-process server published as an onion service
// through a tor of its own on the private network.
type onionServer struct {
	addr  string
	onion *server.Onion
	tor   *tor.Tor
	seen  []tor.Progress
}

// startOnionServer publishes a server through a tor of its own; listen
// is where tor forwards to ("" for a loopback port, or unix:/path).
func startOnionServer(t *testing.T, nw *tornet.Network, clients []tor.ClientKey, listen string) *onionServer {
	t.Helper()
	return publishServer(t, nw, nil, clients, listen)
}

// publishServer publishes a server through t0, or through a tor of its
// own (started on nw) when t0 is nil; only a tor it started is stopped
// at the end.
func publishServer(t *testing.T, nw *tornet.Network, t0 *tor.Tor, clients []tor.ClientKey, listen string) *onionServer {
	t.Helper()
	dir := t.TempDir()
	id, err := server.CreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, config.StoreFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{
		Identity: id, Store: st, Authorizer: server.OpenAccess{},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &onionServer{}
	var mu sync.Mutex
	progress := func(p tor.Progress) { mu.Lock(); s.seen = append(s.seen, p); mu.Unlock() }
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	own := t0 == nil
	s.tor = t0
	if own {
		s.tor, err = tor.Start(ctx, tor.Config{DataDir: filepath.Join(dir, "tor"), Torrc: nw.Torrc(), Progress: progress})
		if err != nil {
			t.Fatalf("server's tor: %v", err)
		}
	}
	key, err := tor.LoadOrCreateOnionKey(filepath.Join(dir, tor.OnionKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	s.onion, err = server.ListenOnion(ctx, server.OnionOptions{Tor: s.tor, Key: key, Clients: clients, Listen: listen, Progress: progress})
	if err != nil {
		if own {
			s.tor.Close()
		}
		t.Fatalf("publish: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeOnion(s.onion) }()
	s.addr = s.onion.Address(id).String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if own {
			s.onion.Close()
			s.tor.Close()
		}
		st.Close()
	})
	return s
}

var onionAddrRe = regexp.MustCompile(`^qpc://[A-Za-z0-9_-]{43}@[a-z2-7]{56}\.onion$`)

func envelope(s string) []byte {
	b := make([]byte, 1200)
	copy(b, s)
	return b
}

// TestOnionDelivery: a client that knows only the qpc://…onion address
// creates a mailbox, sends, fetches and subscribes, all through Tor.
func TestOnionDelivery(t *testing.T) {
	nw, socks := network(t)
	srv := startOnionServer(t, nw, nil, "")
	if !onionAddrRe.MatchString(srv.addr) {
		t.Fatalf("onion address %q is not qpc://<pin>@<56 chars>.onion", srv.addr)
	}
	// Progress was reported for the bootstrap (to 100%) and the upload.
	var boot100, published bool
	for _, p := range srv.seen {
		boot100 = boot100 || p.Stage == tor.StageBootstrap && p.Percent == 100
		published = published || p.Stage == tor.StagePublish && p.Percent == 100
	}
	if !boot100 || !published {
		t.Errorf("progress: bootstrap 100%% %v, publish done %v; saw %d reports", boot100, published, len(srv.seen))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var connectReports int
	var mu sync.Mutex
	owner, err := protocol.Dial(ctx, srv.addr, protocol.Options{Tor: &protocol.TorOptions{
		SOCKS:    socks,
		Progress: func(tor.Progress) { mu.Lock(); connectReports++; mu.Unlock() },
	}})
	if err != nil {
		t.Fatalf("dial the onion: %v", err)
	}
	defer owner.Close()
	if connectReports == 0 {
		t.Error("no progress reported while the circuit was built")
	}
	mb, err := owner.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatalf("create mailbox over tor: %v", err)
	}
	// The sender is another client on its own circuit (another SOCKS
	// username), as a contact would be.
	sender, err := protocol.Dial(ctx, srv.addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}})
	if err != nil {
		t.Fatalf("second client: %v", err)
	}
	defer sender.Close()
	first := protocol.NewMessageID()
	if _, err := sender.Send(ctx, mb.SendID, first, envelope("through tor"), nil); err != nil {
		t.Fatalf("send over tor: %v", err)
	}
	msgs, _, err := owner.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 1 || msgs[0].ID != first || string(msgs[0].Envelope[:11]) != "through tor" {
		t.Fatalf("fetch over tor: %d messages, %v", len(msgs), err)
	}
	sub, err := owner.Subscribe(ctx, mb, msgs[0].Seq)
	if err != nil {
		t.Fatalf("subscribe over tor: %v", err)
	}
	defer sub.Close()
	pushed := protocol.NewMessageID()
	if _, err := sender.Send(ctx, mb.SendID, pushed, envelope("pushed"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.C:
		if m.ID != pushed {
			t.Errorf("subscription delivered %x, want %x", m.ID, pushed)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no push through tor within 30 s (subscription err %v)", sub.Err())
	}
	if n, err := owner.Ack(ctx, mb, []wire.MessageID{first, pushed}); err != nil || n != 2 {
		t.Errorf("ack: %d, %v", n, err)
	}
	// Each client came in on its own stream: the tunnel gave them
	// separate addresses.
	if p := srv.onion.Conn.Peers(); p != 2 {
		t.Errorf("tunnel has %d streams, want 2 (one per client)", p)
	}
}

// TestOnionClientAuthorization: with v3 client authorization on, a tor
// without the key cannot even reach the service; one with it can.
func TestOnionClientAuthorization(t *testing.T) {
	nw, socks := network(t)
	// The client's key pair comes first; the credential names the onion
	// once it is published.
	priv, err := tor.NewClientCredential("")
	if err != nil {
		t.Fatal(err)
	}
	// This server's tor forwards to a unix socket rather than a port.
	sock := filepath.Join(t.TempDir(), "onion.sock")
	srv := startOnionServer(t, nw, []tor.ClientKey{priv.Public()}, "unix:"+sock)
	priv.OnionID = srv.onion.Service.ID

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Unauthorized: the plain client has no key for this onion.
	short, cancelShort := context.WithTimeout(ctx, 60*time.Second)
	_, err = protocol.Dial(short, srv.addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}})
	cancelShort()
	if err == nil {
		t.Fatal("a client without the authorization key connected")
	}
	if !errors.Is(err, tor.ErrClientAuth) {
		t.Errorf("unauthorized dial failed with %v; want tor.ErrClientAuth", err)
	}

	// A client whose own tor holds a wrong key is refused as well.
	wrong, _ := tor.NewClientCredential(srv.onion.Service.ID)
	wrongTor := startClientTor(t, nw)
	if err := wrongTor.AuthorizeClient(wrong); err != nil {
		t.Fatal(err)
	}
	short, cancelShort = context.WithTimeout(ctx, 60*time.Second)
	_, err = protocol.Dial(short, srv.addr, protocol.Options{Tor: &protocol.TorOptions{Tor: wrongTor}})
	cancelShort()
	if err == nil {
		t.Fatal("a client with the wrong authorization key connected")
	}

	// Authorized: our own client tor, given the key over its control port.
	ct := startClientTor(t, nw)
	if err := ct.AuthorizeClient(priv); err != nil {
		t.Fatal(err)
	}
	c, err := protocol.Dial(ctx, srv.addr, protocol.Options{Tor: &protocol.TorOptions{Tor: ct}})
	if err != nil {
		t.Fatalf("authorized client: %v", err)
	}
	defer c.Close()
	mb, err := c.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := protocol.NewMessageID()
	if _, err := c.Send(ctx, mb.SendID, id, envelope("authorized"), nil); err != nil {
		t.Fatal(err)
	}
	if msgs, _, err := c.Fetch(ctx, mb, 0, 1); err != nil || len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("fetch: %d, %v", len(msgs), err)
	}

	// Stream isolation, as tor sees it: by default every Conn gets a
	// circuit of its own; Conns given one isolation key share one.
	dial := func(isolation string) *protocol.Conn {
		t.Helper()
		c, err := protocol.Dial(ctx, srv.addr, protocol.Options{Tor: &protocol.TorOptions{Tor: ct, Isolation: isolation}})
		if err != nil {
			t.Fatalf("dial with isolation %q: %v", isolation, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	before := onionCircuits(t, ct, srv.onion.Service.ID)
	dial("")
	afterOwn := onionCircuits(t, ct, srv.onion.Service.ID)
	key := protocol.IsolationKey("identity", "alice")
	dial(key)
	dial(key)
	after := onionCircuits(t, ct, srv.onion.Service.ID)
	if len(before) != 1 || len(afterOwn) != 2 || len(afterOwn[1]) != 1 || afterOwn[1][0] == before[0][0] {
		t.Errorf("default isolation: streams per circuit went from %v to %v; want a new circuit for the new Conn", before, afterOwn)
	}
	if len(after) != 3 || len(after[2]) != 2 {
		t.Errorf("two Conns with one isolation key: streams per circuit %v; want both on one new circuit", after)
	}
}

// onionCircuits groups tor's open streams to the onion by circuit, in
// the order the circuits first appear: [][]stream ID.
func onionCircuits(t *testing.T, ct *tor.Tor, onionID string) [][]string {
	t.Helper()
	status, err := ct.GetInfo("stream-status")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	byCirc := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(status), "\n") {
		f := strings.Fields(line)
		// StreamID StreamStatus CircuitID Target
		if len(f) < 4 || f[1] != "SUCCEEDED" || !strings.HasPrefix(f[3], onionID) {
			continue
		}
		if _, seen := byCirc[f[2]]; !seen {
			order = append(order, f[2])
		}
		byCirc[f[2]] = append(byCirc[f[2]], f[0])
	}
	out := make([][]string, len(order))
	for i, c := range order {
		out[i] = byCirc[c]
	}
	return out
}

func startClientTor(t *testing.T, nw *tornet.Network) *tor.Tor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "tor")
	ct, err := tor.Start(ctx, tor.Config{DataDir: dir, Torrc: nw.Torrc(), SOCKS: true})
	if err != nil {
		t.Fatalf("client tor: %v", err)
	}
	t.Cleanup(func() { ct.Close() })
	return ct
}
