package e2e

import (
	"bytes"
	"crypto/rand"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
	bolt "go.etcd.io/bbolt"
)

// cheapKSF keeps Argon2id affordable in tests; production clients use
// account.DefaultKSF (tested in package account).
var cheapKSF = account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1})

func newDevice() account.DeviceID {
	var d account.DeviceID
	rand.Read(d[:])
	return d
}

// registered registers a fresh account on c and returns its session.
func registered(t *testing.T, c *protocol.Conn, name string) *protocol.Session {
	t.Helper()
	s, err := c.Register(ctxT(t), name, []byte("correct horse "+name), newDevice(), "laptop", cheapKSF)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return s
}

// wallet fetches the current key and n tokens for the session.
func wallet(t *testing.T, c *protocol.Conn, s *protocol.Session, n int) [][]byte {
	t.Helper()
	ctx := ctxT(t)
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := c.IssueTokens(ctx, s, keys.Keys[keys.Current], n)
	if err != nil {
		t.Fatalf("issue tokens: %v", err)
	}
	var out [][]byte
	for _, tok := range toks {
		raw, err := tok.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, raw)
	}
	return out
}

func TestAccountsAndTokensRoundTrip(t *testing.T) {
	ts := startSecureServer(t, nil)
	ctx := ctxT(t)
	// Account traffic and anonymous traffic on separate connections, as
	// the SDK documents.
	acctConn, anon := dial(t, ts, protocol.Options{}), dial(t, ts, protocol.Options{})

	sess := registered(t, acctConn, "alice")
	dev2 := newDevice()
	sess2, err := acctConn.Login(ctx, "alice", []byte("correct horse alice"), dev2, "phone", cheapKSF)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	devs, err := acctConn.Devices(ctx, sess)
	if err != nil || len(devs) != 2 {
		t.Fatalf("devices: %d, %v", len(devs), err)
	}
	toks := wallet(t, acctConn, sess2, 5)

	// Without a token nothing is created.
	if _, err := anon.CreateMailbox(ctx, nil); !isCode(err, wire.CodeTokenMissing) {
		t.Fatalf("create without a token: %v, want TOKEN_MISSING", err)
	}
	// A session is not a token: the anonymous path does not know sessions.
	if _, err := anon.CreateMailbox(ctx, sess.Token[:]); !isCode(err, wire.CodeTokenMissing) {
		t.Fatalf("create with a session as auth: %v, want TOKEN_MISSING", err)
	}
	mb, err := anon.CreateMailbox(ctx, toks[0])
	if err != nil {
		t.Fatalf("create with a token: %v", err)
	}
	for i, tok := range toks[1:] {
		if _, err := anon.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), tok); err != nil {
			t.Fatalf("send %d with a token: %v", i, err)
		}
	}
	msgs, _, err := anon.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 4 {
		t.Fatalf("fetch: %d, %v", len(msgs), err)
	}
	// Fetch, ack and delete need the owner key, not a token.
	if _, err := anon.Ack(ctx, mb, []wire.MessageID{msgs[0].ID}); err != nil {
		t.Fatal(err)
	}

	// Revoking the phone ends its session: it can no longer get tokens.
	if err := acctConn.RevokeDevice(ctx, sess, dev2); err != nil {
		t.Fatal(err)
	}
	keys, _ := acctConn.TokenKeys(ctx)
	if _, err := acctConn.IssueTokens(ctx, sess2, keys.Keys[keys.Current], 1); !isCode(err, wire.CodeAuth) {
		t.Fatalf("tokens on a revoked session: %v, want AUTH", err)
	}
	// Password change: the old password stops working.
	if err := acctConn.ChangePassword(ctx, sess, "alice", []byte("new battery staple"), cheapKSF); err != nil {
		t.Fatalf("change password: %v", err)
	}
	if _, err := acctConn.Login(ctx, "alice", []byte("correct horse alice"), newDevice(), "x", cheapKSF); !isCode(err, wire.CodeAuth) {
		t.Fatalf("login with the old password: %v, want AUTH", err)
	}
	if _, err := acctConn.Login(ctx, "alice", []byte("new battery staple"), newDevice(), "x", cheapKSF); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	if err := acctConn.DeleteAccount(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if _, err := acctConn.Login(ctx, "alice", []byte("new battery staple"), newDevice(), "x", cheapKSF); !isCode(err, wire.CodeAuth) {
		t.Fatalf("login to a deleted account: %v, want AUTH", err)
	}
}

func TestAccountFailures(t *testing.T) {
	ts := startSecureServer(t, func(o *server.Options) { o.TokenQuota = 3 })
	ctx := ctxT(t)
	c := dial(t, ts, protocol.Options{})
	sess := registered(t, c, "bob")
	if _, err := c.Register(ctx, "bob", []byte("other"), newDevice(), "x", cheapKSF); !isCode(err, wire.CodeTaken) {
		t.Fatalf("register a taken name: %v, want TAKEN", err)
	}
	if _, err := c.Login(ctx, "bob", []byte("wrong"), newDevice(), "x", cheapKSF); !isCode(err, wire.CodeAuth) {
		t.Fatalf("wrong password: %v, want AUTH", err)
	}
	if _, err := c.Login(ctx, "nobody", []byte("whatever"), newDevice(), "x", cheapKSF); !isCode(err, wire.CodeAuth) {
		t.Fatalf("unknown user: %v, want AUTH", err)
	}
	keys, _ := c.TokenKeys(ctx)
	if _, err := c.IssueTokens(ctx, sess, keys.Keys[keys.Current], 3); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IssueTokens(ctx, sess, keys.Keys[keys.Current], 1); !isCode(err, wire.CodeQuota) {
		t.Fatalf("over the token quota: %v, want QUOTA", err)
	}
	// The next epoch brings a fresh quota.
	ts.clock.advance(tokenEpoch)
	keys, _ = c.TokenKeys(ctx)
	if _, err := c.IssueTokens(ctx, sess, keys.Keys[keys.Current], 3); err != nil {
		t.Fatalf("quota in the next epoch: %v", err)
	}
	var forged protocol.Session
	rand.Read(forged.Token[:])
	if _, err := c.IssueTokens(ctx, &forged, keys.Keys[keys.Current], 1); !isCode(err, wire.CodeAuth) {
		t.Fatalf("tokens on a forged session: %v, want AUTH", err)
	}
}

// TestTokenFailures: every way a token can be bad is refused with its own
// code, while a well-behaved client keeps sending on another connection.
func TestTokenFailures(t *testing.T) {
	ts := startSecureServer(t, nil)
	ctx := ctxT(t)
	c := dial(t, ts, protocol.Options{})
	sess := registered(t, c, "carol")
	toks := wallet(t, c, sess, 20)
	mb, err := c.CreateMailbox(ctx, toks[0])
	if err != nil {
		t.Fatal(err)
	}
	toks = toks[1:]

	// A well-behaved client, sending with its own tokens all along.
	good := dial(t, ts, protocol.Options{})
	goodSess := registered(t, good, "dave")
	goodToks := wallet(t, good, goodSess, 30)
	var wg sync.WaitGroup
	goodErrs := make(chan error, 64)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, tok := range goodToks {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := good.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), tok); err != nil {
				goodErrs <- err
			}
		}
	}()

	send := func(auth []byte) error {
		_, err := c.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("x"), auth)
		return err
	}
	// Forged: a token-shaped blob with a random PRF output.
	forged, _ := tokens.ParseToken(toks[0])
	rand.Read(forged.Output[:])
	raw, _ := forged.MarshalBinary()
	if err := send(raw); !isCode(err, wire.CodeTokenInvalid) {
		t.Errorf("forged token: %v, want TOKEN_INVALID", err)
	}
	// Malformed.
	if err := send([]byte("not a token")); !isCode(err, wire.CodeTokenMissing) {
		t.Errorf("malformed token: %v, want TOKEN_MISSING", err)
	}
	// Double spend: once on a send, then on a create and a send.
	if err := send(toks[1]); err != nil {
		t.Fatal(err)
	}
	if err := send(toks[1]); !isCode(err, wire.CodeTokenSpent) {
		t.Errorf("double spend: %v, want TOKEN_SPENT", err)
	}
	if _, err := c.CreateMailbox(ctx, toks[1]); !isCode(err, wire.CodeTokenSpent) {
		t.Errorf("double spend on create: %v, want TOKEN_SPENT", err)
	}
	// A retry of the same message with the same token is a duplicate, not
	// a double spend.
	id := protocol.NewMessageID()
	if _, err := c.Send(ctx, mb.SendID, id, []byte("once"), toks[2]); err != nil {
		t.Fatal(err)
	}
	if dup, err := c.Send(ctx, mb.SendID, id, []byte("once"), toks[2]); err != nil || !dup {
		t.Errorf("retry with its token: dup=%v err=%v", dup, err)
	}
	// Token from another server's key.
	other := startSecureServer(t, nil)
	oc := dial(t, other, protocol.Options{})
	foreign := wallet(t, oc, registered(t, oc, "erin"), 1)
	if err := send(foreign[0]); !isCode(err, wire.CodeTokenInvalid) {
		t.Errorf("token of another server: %v, want TOKEN_INVALID", err)
	}
	close(stop)
	wg.Wait()
	close(goodErrs)
	for err := range goodErrs {
		t.Errorf("well-behaved client failed: %v", err)
	}

	// Double spend across a restart: the spent set is durable.
	ts.restart()
	if err := send(toks[1]); !isCode(err, wire.CodeTokenSpent) {
		t.Errorf("double spend after restart: %v, want TOKEN_SPENT", err)
	}
	// Tokens of the previous epoch still work; older ones are expired.
	ts.clock.advance(tokenEpoch)
	if err := send(toks[3]); err != nil {
		t.Errorf("token of the previous epoch: %v", err)
	}
	ts.clock.advance(tokenEpoch)
	if err := send(toks[4]); !isCode(err, wire.CodeTokenExpired) {
		t.Errorf("token two epochs old: %v, want TOKEN_EXPIRED", err)
	}
}

// TestUnlinkableByStructure: the anonymous handlers cannot see an account,
// and what issuance stores cannot be joined with what redemption stores.
func TestUnlinkableByStructure(t *testing.T) {
	// 1. The anonymous requests carry no session: their fields are exactly
	// these, and the authorization hook receives only the auth bytes.
	fields := func(v any) []string {
		var out []string
		for f := range reflect.TypeOf(v).Elem().Fields() {
			out = append(out, f.Name)
		}
		return out
	}
	if got := fields(&wire.Send{}); !reflect.DeepEqual(got, []string{"SendID", "MessageID", "Auth", "Envelope"}) {
		t.Errorf("Send fields %v", got)
	}
	if got := fields(&wire.CreateMailbox{}); !reflect.DeepEqual(got, []string{"OwnerKey", "Auth", "Signature"}) {
		t.Errorf("CreateMailbox fields %v", got)
	}
	auth := reflect.TypeOf((*server.Authorizer)(nil)).Elem()
	for m := range auth.Methods() {
		if m.Type.NumIn() != 2 || m.Type.In(1) != reflect.TypeOf([]byte(nil)) {
			t.Errorf("Authorizer.%s takes %v: it must see only the auth bytes", m.Name, m.Type)
		}
	}
	// The token authorizer holds nothing from the accounts room.
	reachesAccounts(t, reflect.TypeOf(server.TokenAuthorizer{}), map[reflect.Type]bool{})

	// 2. Storage: issue and redeem tokens, then compare the two databases.
	ts := startSecureServer(t, nil)
	ctx := ctxT(t)
	var taps streamLog
	acct := dial(t, ts, protocol.Options{Tap: taps.tap})
	anon := dial(t, ts, protocol.Options{})
	sess := registered(t, acct, "frank")
	toks := wallet(t, acct, sess, 10)
	mb, err := anon.CreateMailbox(ctx, toks[0])
	if err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks[1:] {
		if _, err := anon.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), tok); err != nil {
			t.Fatal(err)
		}
	}
	ts.stop()
	acctDB := dumpBolt(t, filepath.Join(ts.dir, "accounts.db"))
	mailDB := dumpBolt(t, filepath.Join(ts.dir, "qpc.db"))
	// Every 16-byte window of every key and value of one database, looked
	// for in the other.
	for _, pair := range [][2][][]byte{{acctDB, mailDB}, {mailDB, acctDB}} {
		hay := bytes.Join(pair[1], []byte{0})
		for _, item := range pair[0] {
			for i := 0; i+16 <= len(item); i++ {
				if w := item[i : i+16]; !allSame(w) && bytes.Contains(hay, w) {
					t.Fatalf("a 16-byte run of one database appears in the other: issuance and redemption can be joined")
				}
			}
		}
	}
	// Nothing the issuance exchange carried (blinded elements, evaluations,
	// proof) is stored anywhere, and no spend key sits with the accounts.
	taps.mu.Lock()
	defer taps.mu.Unlock()
	all := bytes.Join(append(acctDB, mailDB...), []byte{0})
	for _, dirs := range taps.streams {
		for _, b := range dirs {
			if len(b) < 5 || (b[0] != byte(wire.KindIssueTokens) && b[0] != byte(wire.KindTokensIssued)) {
				continue
			}
			n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
			body := b[4 : 4+n]
			for i := 40; i+32 <= len(body); i += 32 { // past the session / headers
				if w := body[i : i+32]; !allSame(w) && bytes.Contains(all, w) {
					t.Fatalf("issuance bytes are stored")
				}
			}
		}
	}
	for _, raw := range toks {
		tok, _ := tokens.ParseToken(raw)
		key := tokens.SpendKey(tok)
		if !bytes.Contains(bytes.Join(mailDB, nil), key[:]) {
			t.Fatalf("spend key missing from the mailbox store: the test is not looking at the right data")
		}
		if bytes.Contains(bytes.Join(acctDB, nil), key[:]) {
			t.Fatalf("a spend key is stored with the accounts")
		}
	}
}

func allSame(b []byte) bool {
	for _, c := range b {
		if c != b[0] {
			return false
		}
	}
	return true
}

// reachesAccounts fails if type t can hold anything from server/accounts.
func reachesAccounts(t *testing.T, typ reflect.Type, seen map[reflect.Type]bool) {
	if seen[typ] {
		return
	}
	seen[typ] = true
	if strings.Contains(typ.PkgPath(), "server/accounts") || strings.Contains(typ.PkgPath(), "qpc/account") {
		t.Fatalf("TokenAuthorizer can reach %v", typ)
	}
	switch typ.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
		reachesAccounts(t, typ.Elem(), seen)
	case reflect.Map:
		reachesAccounts(t, typ.Key(), seen)
		reachesAccounts(t, typ.Elem(), seen)
	case reflect.Struct:
		for f := range typ.Fields() {
			reachesAccounts(t, f.Type, seen)
		}
	}
}

// dumpBolt returns every key and value of every bucket of a bbolt file.
func dumpBolt(t *testing.T, path string) [][]byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out [][]byte
	var walk func(b *bolt.Bucket)
	walk = func(b *bolt.Bucket) {
		b.ForEach(func(k, v []byte) error {
			out = append(out, bytes.Clone(k))
			if v == nil {
				if sub := b.Bucket(k); sub != nil {
					walk(sub)
				}
			} else {
				out = append(out, bytes.Clone(v))
			}
			return nil
		})
	}
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			walk(b)
			return nil
		})
	})
	if len(out) == 0 {
		t.Fatalf("%s is empty", path)
	}
	return out
}
