package e2e

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

// authLog keeps, for one client, the auth field of every Send request it
// puts on the wire, by the role of the connection it crossed (what the
// server sees of each connection's payments).
type authLog struct {
	mu      sync.Mutex
	streams map[string][]byte // role/stream → the request bytes
	roles   map[string]string // role/stream → role
	order   []string
}

func newAuthLog() *authLog {
	return &authLog{streams: map[string][]byte{}, roles: map[string]string{}}
}

func (l *authLog) tap(role string, stream int64, outgoing bool, b []byte) {
	if !outgoing || len(b) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := fmt.Sprintf("%s/%d", role, stream)
	if _, ok := l.streams[k]; !ok {
		l.order = append(l.order, k)
		l.roles[k] = role
	}
	l.streams[k] = append(l.streams[k], b...)
}

// sends returns the Send requests seen so far: the role of each, its
// auth (empty: paid by its connection's allowance) and the record's size.
func (l *authLog) sends(t *testing.T) (roles []string, auths [][]byte, sizes []int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.order {
		rest := l.streams[k]
		for len(rest) > 0 {
			kind, body, next, err := wire.ParseRecord(padding.Default, rest)
			if err != nil {
				break // a record still being written
			}
			size := len(rest) - len(next)
			rest = next
			if kind != wire.KindSend {
				continue
			}
			sizes = append(sizes, size)
			m, err := wire.Decode(kind, body)
			if err != nil {
				t.Fatalf("%s: a Send that does not decode: %v", k, err)
			}
			roles = append(roles, l.roles[k])
			auths = append(auths, m.(*wire.Send).Auth)
		}
	}
	return roles, auths, sizes
}

// TestMessengerSendPaidTokens: the messenger pays for its Sends with
// Conn.SendPaid (docs/adr/0017-token-per-connection.md): 16 texts to bob
// and 16 to carol, alternating, go out on the two conversations'
// connections with one token shown per 8 Sends of each, not one per
// Send, in records of one size with a token or without; every token is
// shown on one connection only (a token a Send did
// not need is used again only if it was never shown, so nothing links the
// two conversations' connections); and both get every text.
func TestMessengerSendPaidTokens(t *testing.T) {
	ms := startMessengerServer(t)
	log := newAuthLog()
	alice := newUserWith(t, ms, "alice", func(o *client.Options) { o.Tap = log.tap })
	bob := newUser(t, ms, "bob")
	carol := newUser(t, ms, "carol")
	connect(t, alice, bob)
	connect(t, alice, carol)
	ctx := ctxT(t)
	before, err := alice.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, auths, _ := log.sends(t)
	mark := len(auths)

	const n = 16
	for i := range n {
		for _, peer := range []string{"bob", "carol"} {
			if err := alice.Send(ctx, peer, fmt.Sprintf("text %d to %s", i, peer)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if p, err := alice.Pending(); err != nil || p != 0 {
		t.Fatalf("alice's outbox: %d, %v", p, err)
	}
	for _, peer := range []*client.Client{bob, carol} {
		var want []string
		for i := range n {
			want = append(want, fmt.Sprintf("alice: text %d to %s", i, peer.Handle()))
		}
		if got := texts(t, peer); !slices.Equal(got, want) {
			t.Fatalf("%s got %q", peer.Handle(), got)
		}
	}
	after, err := alice.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}

	roles, auths, sizes := log.sends(t)
	roles, auths, sizes = roles[mark:], auths[mark:], sizes[mark:]
	// A Send without a token is padded to the bucket of one with it: the
	// network sees the same record either way.
	for i, n := range sizes {
		if n != sizes[0] || !padding.Default.IsBucket(n) {
			t.Fatalf("Send %d (auth of %d bytes) is a %d-byte record, Send 0 (auth of %d) %d bytes", i, len(auths[i]), n, len(auths[0]), sizes[0])
		}
	}
	if len(auths) != 2*n {
		t.Fatalf("%d Sends on the wire for %d texts", len(auths), 2*n)
	}
	paid := map[string]int{}
	shownOn := map[string]string{}
	for i, a := range auths {
		if len(a) == 0 {
			continue
		}
		paid[roles[i]]++
		if r, ok := shownOn[string(a)]; ok && r != roles[i] {
			t.Errorf("a token was shown on %s and again on %s: the server can link the two connections", r, roles[i])
		}
		shownOn[string(a)] = roles[i]
	}
	total := 0
	for role, k := range paid {
		// 16 Sends on one connection: the 1st and the 9th pay, unless
		// the connection was dialled again meanwhile.
		if k > 3 {
			t.Errorf("%s: %d of %d Sends carried a token, want at most 3", role, k, n)
		}
		total += k
	}
	if len(paid) != 2 {
		t.Errorf("Sends paid on %d connections, want the two conversations' (%v)", len(paid), paid)
	}
	t.Logf("%d texts on 2 connections: %d tokens shown (%.3f per text); the wallet held %d tokens before, %d after", 2*n, total, float64(total)/float64(2*n), before.Tokens, after.Tokens)
}
