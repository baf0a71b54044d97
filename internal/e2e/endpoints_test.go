package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt/vrf"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/tor/tunnel"
	"github.com/quicprochat/qpc/wire"
)

// keySet are the files an operator copies to every node of one server
// (docs/scaling.md).
var keySet = []string{server.KeyFile, server.TokenKeyFile, accounts.KeyFileName, server.KTNoteKeyFile, server.KTVRFKeyFile}

// copyKeySet copies the key set of data directory from into a new data
// directory to, as an operator provisions a node.
func copyKeySet(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range keySet {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// nodeArgs are the flags of one node of a server on the database url.
func nodeArgs(dir, url string) []string {
	return []string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--shutdown-timeout", "5s", "--store", url}
}

// TestAttackNodeWithOtherKeys plays an operator's slip (or a planted
// node) among the nodes of one server on one PostgreSQL: a node whose
// data directory holds another tls.key (it would present another pin,
// and every client would refuse it, or pin it), another tokens.key
// (tokens issued by one node would not redeem on another), or no keys at
// all (it would make a key set of its own) must refuse to start, naming
// the key and never its value. A node with the copied key set starts.
func TestAttackNodeWithOtherKeys(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	base := t.TempDir()
	dir1 := filepath.Join(base, "node1")
	r1 := startRun(t, nodeArgs(dir1, url)...)

	dir2 := filepath.Join(base, "node2")
	copyKeySet(t, dir1, dir2)
	r2 := startRun(t, nodeArgs(dir2, url)...)
	a1, _ := wire.ParseAddress(r1.addr)
	a2, _ := wire.ParseAddress(r2.addr)
	if a1.Pin != a2.Pin {
		t.Fatalf("two nodes with one key set announce %s and %s", r1.addr, r2.addr)
	}

	// Another TLS key: a fresh identity, the rest copied.
	dirTLS := filepath.Join(base, "other-tls")
	copyKeySet(t, dir1, dirTLS)
	os.Remove(filepath.Join(dirTLS, server.KeyFile))
	if _, err := server.CreateIdentity(dirTLS); err != nil {
		t.Fatal(err)
	}
	// Another token secret.
	dirTok := filepath.Join(base, "other-tokens")
	copyKeySet(t, dir1, dirTok)
	otherSecret := make([]byte, tokens.MasterSecretSize)
	for i := range otherSecret {
		otherSecret[i] = byte(i + 1)
	}
	if err := os.WriteFile(filepath.Join(dirTok, server.TokenKeyFile), otherSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	// Another VRF key: every node would answer key-transparency lookups
	// under labels of its own.
	dirVRF := filepath.Join(base, "other-vrf")
	copyKeySet(t, dir1, dirVRF)
	otherSeed := make([]byte, vrf.SeedSize)
	otherSeed[0] = 7
	if err := os.WriteFile(filepath.Join(dirVRF, server.KTVRFKeyFile), otherSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	tlsRaw, _ := os.ReadFile(filepath.Join(dirTLS, server.KeyFile))
	for _, tc := range []struct {
		dir, want string
		secret    []byte
	}{
		{dirTLS, server.KeyFile + " differs", tlsRaw},
		{dirTok, server.TokenKeyFile + " differs", otherSecret},
		{dirVRF, server.KTVRFKeyFile + " differs", otherSeed},
	} {
		r, err := tryRun(t, nodeArgs(tc.dir, url)...)
		if err == nil {
			r.stop()
			t.Fatalf("a node with another %s started on the server's database (it announced %s, the server is %s)", strings.TrimSuffix(tc.want, " differs"), r.addr, r1.addr)
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "copy the key set") {
			t.Errorf("refusal of a node with another key: %v; want it to say %q and how to fix it", err, tc.want)
		}
		for _, leak := range []string{string(tc.secret), strings.TrimSpace(string(tc.secret)), fmt.Sprintf("%x", tc.secret)} {
			if leak != "" && strings.Contains(err.Error()+r.logs.String(), leak) {
				t.Errorf("the refusal or the log shows the key itself")
			}
		}
	}

	// An empty data directory: the node must not make keys of its own.
	dirEmpty := filepath.Join(base, "empty")
	r, err := tryRun(t, nodeArgs(dirEmpty, url)...)
	if err == nil {
		r.stop()
		t.Fatalf("a node with an empty data directory started with a key set of its own (%s; the server is %s)", r.addr, r1.addr)
	}
	if !strings.Contains(err.Error(), "lacks ") || !strings.Contains(err.Error(), server.KeyFile) || !strings.Contains(err.Error(), "copy the key set") {
		t.Errorf("refusal of a node without keys: %v; want it to name %s and say to copy the key set", err, server.KeyFile)
	}
	if _, serr := os.Stat(filepath.Join(dirEmpty, server.KeyFile)); serr == nil {
		t.Errorf("the refused node created %s", server.KeyFile)
	}
}

// TestEndpointsFailover: one server of two nodes on one PostgreSQL, the
// key set copied; a client holds the address of both endpoints. It
// registers, is issued tokens, subscribes and sends; then the node it is
// connected to dies hard (its socket vanishes mid-session: no close
// reaches the client), and without anything done by the user the same
// client's next Send goes through the other node and its subscription
// resumes there and delivers it. Tokens issued by one node pay on the
// other (one tokens.key).
func TestEndpointsFailover(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	base := t.TempDir()
	dir1, dir2 := filepath.Join(base, "node1"), filepath.Join(base, "node2")
	r1 := startRun(t, nodeArgs(dir1, url)...)
	copyKeySet(t, dir1, dir2)
	r2 := startRun(t, nodeArgs(dir2, url)...)
	a1, _ := wire.ParseAddress(r1.addr)
	a2, _ := wire.ParseAddress(r2.addr)
	// Each node behind a relay whose closing is the node's death: its
	// address stops answering at once, with no goodbye.
	p1, p2 := newUDPProxy(t, a1.Host), newUDPProxy(t, a2.Host)
	proxies := map[string]*udpProxy{p1.addr(): p1, p2.addr(): p2}
	addr := wire.Address{Pin: a1.Pin, Host: p1.addr(), More: []string{p2.addr()}}.String()

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// Short timeouts so that a dead node is noticed in seconds; generous
	// deadlines below for a loaded machine.
	opts := protocol.Options{HandshakeTimeout: 5 * time.Second, IdleTimeout: 4 * time.Second, RequestTimeout: 4 * time.Second}
	conn, err := protocol.Dial(ctx, addr, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	var device account.DeviceID
	device[0] = 1
	sess, err := conn.Register(ctx, "two-nodes", []byte("a long passphrase"), device, "test",
		account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1}))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	keys, err := conn.TokenKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := conn.IssueTokens(ctx, sess, keys.Keys[keys.Current], 3)
	if err != nil {
		t.Fatalf("issue tokens: %v", err)
	}
	tok := func(i int) []byte { b, _ := toks[i].MarshalBinary(); return b }
	mb, err := conn.CreateMailbox(ctx, tok(0))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := conn.Subscribe(ctx, mb, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	receive := func(want string) {
		t.Helper()
		select {
		case m, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			if string(m.Envelope) != want {
				t.Fatalf("subscription delivered %q, want %q", m.Envelope, want)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%q not delivered within 60s", want)
		}
	}
	if _, err := conn.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("before"), tok(1)); err != nil {
		t.Fatal(err)
	}
	receive("before")

	dead := conn.Endpoint()
	p, ok := proxies[dead]
	if !ok {
		t.Fatalf("connected to %s, not one of the endpoints %s", dead, addr)
	}
	p.close()
	t.Logf("killed the node behind %s", dead)

	killed := time.Now()
	if _, err := conn.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("after"), tok(2)); err != nil {
		t.Fatalf("send after the node died: %v", err)
	}
	t.Logf("the send after the death took %v (request timeout %v)", time.Since(killed).Round(time.Millisecond), opts.RequestTimeout)
	if now := conn.Endpoint(); now == dead {
		t.Fatalf("the send after the node died went to %s, the dead node", now)
	}
	receive("after")
	t.Logf("the subscription delivered it %v after the death (idle timeout %v)", time.Since(killed).Round(time.Millisecond), opts.IdleTimeout)
}

// TestEndpointsBadList: an endpoint list the parser refuses is a clear
// error from Dial, before any packet; a list whose every endpoint is dead
// fails once each was tried, naming them.
func TestEndpointsBadList(t *testing.T) {
	t.Parallel()
	pin := wire.PinSPKI([]byte("spki"))
	pinText := wire.Address{Pin: pin, Host: "h:1"}.String()[6:49]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, bad := range []string{
		"qpc://" + pinText + "@127.0.0.1:1,127.0.0.1:1",
		"qpc://" + pinText + "@127.0.0.1:1,",
		"qpc://" + pinText + "@127.0.0.1:1, 127.0.0.1:2",
		"qpc://" + pinText + "@" + strings.Repeat("127.0.0.1:1,", wire.MaxEndpoints) + "127.0.0.1:2",
	} {
		if _, err := protocol.Dial(ctx, bad, protocol.Options{}); !errors.Is(err, wire.ErrBadAddress) {
			t.Errorf("Dial(%q) = %v, want ErrBadAddress", bad, err)
		}
	}
	// Two endpoints where nothing listens.
	var hosts []string
	for range 2 {
		pc, err := listenLocal()
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, pc.LocalAddr().String())
		pc.Close()
	}
	addr := wire.Address{Pin: pin, Host: hosts[0], More: hosts[1:]}.String()
	_, err := protocol.Dial(ctx, addr, protocol.Options{HandshakeTimeout: 2 * time.Second, MaxAttempts: 1})
	if err == nil || !strings.Contains(err.Error(), "every endpoint failed") || !strings.Contains(err.Error(), hosts[0]) || !strings.Contains(err.Error(), hosts[1]) {
		t.Fatalf("Dial of two dead endpoints: %v; want every endpoint named", err)
	}
}

// torDialer stands in for Tor's SOCKS port with the same tunnel Tor
// carries: it maps the test's onion name to a local listener and takes
// any other host:port as a Tor exit would, over TCP. It records every
// host:port the client asked it for, and the streams, so a test can cut
// a node's circuits.
type torDialer struct {
	onion, onionTarget string
	mu                 sync.Mutex
	asked              []string
	conns              map[string][]net.Conn
}

func (d *torDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	target := addr
	if addr == d.onion {
		target = d.onionTarget
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, target)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked = append(d.asked, addr)
	if err == nil {
		d.conns[addr] = append(d.conns[addr], c)
	}
	return c, err
}

// cut closes every stream to addr, as the death of the node behind it.
func (d *torDialer) cut(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns[addr] {
		c.Close()
	}
}

func (d *torDialer) askedFor() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.asked)
}

// TestAttackOnionFailoverStaysOnTor plays the network observer at a
// clearnet node against a client that reaches a server through Tor: the
// address lists an onion endpoint and a clearnet one (two nodes on one
// store, one key). Whichever node the client starts on dies; the client
// goes on through the other, and every connection, the failover's
// included, goes through Tor: the clearnet node never sees the client's
// own address. Without the rule (Tor chosen per endpoint) the clearnet
// endpoint is dialled directly over UDP, where nothing answers.
func TestAttackOnionFailoverStaysOnTor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id, err := server.CreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, config.StoreFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var lns []net.Listener
	for range 2 {
		srv, err := server.New(server.Options{Identity: id, Store: st, Authorizer: server.OpenAccess{},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		served := make(chan error, 1)
		go func() { served <- srv.ServeTransport(tunnel.Server(ln, tunnel.Options{}), metrics.TransportTor) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-served
		})
	}
	onion := strings.Repeat("abcdefgh234567", 4) + ".onion:" + wire.OnionPort
	clear := lns[1].Addr().String()
	d := &torDialer{onion: onion, onionTarget: lns[0].Addr().String(), conns: map[string][]net.Conn{}}
	addr := wire.Address{Pin: id.Pin(), Host: onion, More: []string{clear}}.String()

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	conn, err := protocol.Dial(ctx, addr, protocol.Options{HandshakeTimeout: 5 * time.Second, IdleTimeout: 4 * time.Second,
		RequestTimeout: 4 * time.Second, BaseBackoff: 10 * time.Millisecond, Tor: &protocol.TorOptions{Dialer: d}})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	mb, err := conn.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("before"), nil); err != nil {
		t.Fatal(err)
	}
	first := conn.Endpoint()
	// The node dies: its listener goes and its circuits are cut.
	if first == onion {
		lns[0].Close()
	} else {
		lns[1].Close()
	}
	d.cut(first)
	if _, err := conn.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("after"), nil); err != nil {
		t.Fatalf("send after the node at %s died: %v", first, err)
	}
	if now := conn.Endpoint(); now == first {
		t.Fatalf("still on %s after it died", now)
	}
	asked := d.askedFor()
	if !slices.Contains(asked, onion) || !slices.Contains(asked, clear) {
		t.Fatalf("Tor was asked for %v; want both endpoints, the clearnet one %s included", asked, clear)
	}
	msgs, _, err := conn.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("fetch: %d messages, %v; want both", len(msgs), err)
	}
}

// startNode serves a server of identity id over store st on a fresh UDP
// socket on 127.0.0.1 and returns its host:port.
func startNode(t *testing.T, id *server.Identity, st store.Store) string {
	t.Helper()
	srv, err := server.New(server.Options{Identity: id, Store: st, Authorizer: server.OpenAccess{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := listenLocal()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(pc) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return pc.LocalAddr().String()
}

// TestAttackImpostorEndpoint plays a network attacker who answers at one
// of a server's endpoints (a hijacked DNS name, a rogue node) with a key
// of its own: the client never talks to it, whichever order it draws,
// and goes on through the real node; with the impostor alone it fails
// with ErrPin.
func TestAttackImpostorEndpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	real, err := server.CreateIdentity(filepath.Join(dir, "real"))
	if err != nil {
		t.Fatal(err)
	}
	fake, err := server.CreateIdentity(filepath.Join(dir, "fake"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, config.StoreFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	good := startNode(t, real, st)
	bad := startNode(t, fake, st)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addr := wire.Address{Pin: real.Pin(), Host: bad, More: []string{good}}.String()
	// Each Dial draws its order: enough of them to start at the impostor.
	for range 8 {
		conn, err := protocol.Dial(ctx, addr, protocol.Options{HandshakeTimeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		if e := conn.Endpoint(); e != good {
			t.Fatalf("the client serves through %s, the impostor's endpoint", e)
		}
		if _, err := conn.CreateMailbox(ctx, nil); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	alone := wire.Address{Pin: real.Pin(), Host: bad}.String()
	if _, err := protocol.Dial(ctx, alone, protocol.Options{HandshakeTimeout: 5 * time.Second, MaxAttempts: 1}); !errors.Is(err, protocol.ErrPin) {
		t.Fatalf("dial of the impostor alone: %v, want ErrPin", err)
	}
}

// TestAttackDeadNodeDoesNotHoldDial: of two endpoints, one a node that
// died without a word (its address swallows every packet), a new
// connection does not wait a whole handshake timeout when it draws the
// dead one first: the live one is tried beside it after the stagger
// delay. Dials of the live endpoint alone, interleaved, are the baseline.
func TestAttackDeadNodeDoesNotHoldDial(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	id, err := server.CreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, config.StoreFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	live := startNode(t, id, st)
	hole, err := listenLocal() // open, never read: a dead node's address
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	both := wire.Address{Pin: id.Pin(), Host: hole.LocalAddr().String(), More: []string{live}}.String()
	alone := wire.Address{Pin: id.Pin(), Host: live}.String()
	const handshake = 30 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dial := func(addr string) time.Duration {
		start := time.Now()
		c, err := protocol.Dial(ctx, addr, protocol.Options{HandshakeTimeout: handshake})
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		d := time.Since(start)
		if e := c.Endpoint(); e != live {
			t.Fatalf("connected to %s, not the live node %s", e, live)
		}
		c.Close()
		return d
	}
	var withDead, baseline []time.Duration
	for range 8 {
		baseline = append(baseline, dial(alone))
		withDead = append(withDead, dial(both))
	}
	slices.Sort(withDead)
	slices.Sort(baseline)
	t.Logf("dial with a dead endpoint in the list: median %v, max %v; the live endpoint alone: median %v (handshake timeout %v)",
		withDead[len(withDead)/2], withDead[len(withDead)-1], baseline[len(baseline)/2], handshake)
	// Eight draws start at the dead node about four times; any of them
	// waiting for the handshake timeout fails this.
	if worst := withDead[len(withDead)-1]; worst >= handshake/2 {
		t.Fatalf("a dial took %v with a dead endpoint first: it waited for the handshake timeout (%v)", worst, handshake)
	}
}
