package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/wire"
)

// roleLog collects the outgoing bytes of every request stream of a
// client, by connection role.
type roleLog struct {
	mu      sync.Mutex
	streams map[string][]byte // role + "/" + stream
}

func (l *roleLog) tap(role string, stream int64, outgoing bool, b []byte) {
	if !outgoing {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams == nil {
		l.streams = map[string][]byte{}
	}
	k := role + "/" + hex.EncodeToString([]byte{byte(stream >> 8), byte(stream)})
	l.streams[k] = append(l.streams[k], b...)
}

// requests decodes every request a client sent, by role.
func (l *roleLog) requests(t *testing.T, policy padding.Policy) map[string][]wire.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]wire.Message{}
	for k, b := range l.streams {
		role, stream, _ := strings.Cut(k, "/")
		p := policy
		if stream == "0000" {
			p = padding.Control // the hello stream
		}
		r := wire.NewReader(bytes.NewReader(b), p)
		for !r.AtEOF() {
			m, err := r.ReadMessage()
			if err != nil {
				t.Fatalf("%s: undecodable request: %v", k, err)
			}
			out[role] = append(out[role], m)
		}
	}
	return out
}

// TestMessengerPrivacy runs the group scenario and then checks what the
// server could learn: nothing it stores or logs puts a handle, an identity
// key or an account next to a mailbox ID, and no request on the
// send/fetch path carried a session — the account connection carries
// account business only, every other connection none of it. Every
// key-transparency lookup had a connection to itself, so the server
// cannot tell that the handles a user looked up (a group's members) were
// wanted by one client.
func TestMessengerPrivacy(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	handles := []string{"alicewonderland", "bobthebuilder", "carolsinger"}
	logs := map[string]*roleLog{}
	users := map[string]*client.Client{}
	for _, h := range handles {
		opts := messengerOptions(t.TempDir())
		logs[h] = &roleLog{}
		opts.Tap = logs[h].tap
		c, err := client.Init(ctx, ms.addr, ms.pin(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx, h, []byte("password of "+h)); err != nil {
			t.Fatal(err)
		}
		users[h] = c
	}
	alice, bob, carol := users[handles[0]], users[handles[1]], users[handles[2]]
	addContacts(t, ctx, alice.Handle(), bob, carol)
	if err := alice.CreateGroup(ctx, "team", handles[1:]); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	texts(t, carol)
	texts(t, alice)
	for _, c := range []*client.Client{alice, bob, carol} {
		if err := c.Send(ctx, "#team", "hello from "+c.Handle()); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*client.Client{alice, bob, carol} {
		if got := texts(t, c); len(got) != 2 {
			t.Fatalf("%s got %q", c.Handle(), got)
		}
	}
	if err := alice.RemoveMember(ctx, "team", handles[2]); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	texts(t, carol)

	// What identifies the users, and their intro mailboxes (public by
	// design: a KT record names its intro mailbox, for first contact).
	var idents [][]byte
	intros := map[wire.ID]bool{}
	for _, h := range handles {
		idents = append(idents, []byte(h))
		sum := sha256.Sum256(append([]byte("qpc/1 account\x00"), h...)) // the account ID the server keeps
		idents = append(idents, sum[:])
	}
	for _, pair := range [][2]*client.Client{{alice, bob}, {bob, carol}, {carol, alice}} {
		ct, err := pair[0].AddContact(ctx, pair[1].Handle())
		if err != nil {
			t.Fatal(err)
		}
		idents = append(idents, ct.IdentityKey)
		idents = append(idents, ct.DeviceKeys...)
		intros[ct.IntroSendID] = true
	}

	// The mailbox IDs the clients used, from their own requests; and the
	// send/fetch path never carried account business.
	policy := dial(t, ms.testServer, protocol.Options{}).Policy()
	mailboxIDs := map[wire.ID]bool{}
	lookupConns, fetchConns := 0, 0
	for h, l := range logs {
		for role, reqs := range l.requests(t, policy) {
			// A request retried after its timeout (a loaded or -race run)
			// repeats the same label or handle on the same connection,
			// which tells the server nothing new: count what is named.
			var lookups, fetches, others int
			looked, fetched := map[string]bool{}, map[string]bool{}
			for _, m := range reqs {
				switch m := m.(type) {
				case *wire.KTLookup:
					if strings.HasPrefix(m.Label, "qpc:token-key:") || m.Label == "qpc:token-epoch" {
						// The token key's and epoch length's labels are
						// the same for every client: checked on the
						// account connection.
						others++
						continue
					}
					if !looked[m.Label] {
						looked[m.Label] = true
						lookups++
					}
				case *wire.FetchKeyPackage:
					if !fetched[m.Handle] {
						fetched[m.Handle] = true
						fetches++
					}
				case *wire.ClientHello:
				default:
					others++
				}
			}
			if lookups > 0 && (lookups != 1 || others != 0 || !strings.HasPrefix(role, "kt-lookup:")) {
				t.Errorf("%s: the %s connection carried %d KT lookups and %d other requests; a lookup must be alone on its connection", h, role, lookups, others)
			}
			if lookups == 1 {
				lookupConns++
			}
			// Taking a contact's one-time KeyPackage says someone is about
			// to write to that handle: alone on its connection too.
			if fetches > 0 && (fetches != 1 || others != 0 || lookups != 0 || !strings.HasPrefix(role, "kp-fetch:")) {
				t.Errorf("%s: the %s connection carried %d KeyPackage fetches, %d lookups and %d other requests", h, role, fetches, lookups, others)
			}
			if fetches == 1 {
				fetchConns++
			}
			for _, m := range reqs {
				switch m := m.(type) {
				case *wire.AccountRequest, *wire.IssueTokens, *wire.KTPublish, *wire.KTHistory, *wire.UploadKeyPackages:
					if role != "account" {
						t.Errorf("%s: a %T (session business) on the %s connection", h, m, role)
					}
				case *wire.CreateMailbox, *wire.Send, *wire.Fetch, *wire.Subscribe, *wire.Ack, *wire.DeleteMailbox:
					if role == "account" {
						t.Errorf("%s: a %T on the account connection", h, m)
					}
				}
				switch m := m.(type) {
				case *wire.Send:
					mailboxIDs[m.SendID] = true
				case *wire.Fetch:
					mailboxIDs[m.ReceiveID] = true
				case *wire.Ack:
					mailboxIDs[m.ReceiveID] = true
				}
			}
		}
	}
	// At least: alice looked up bob and carol to create the group, and
	// each user the contact added below.
	if lookupConns < 5 {
		t.Errorf("only %d lookup connections seen", lookupConns)
	}
	// alice fetched one for bob and one for carol to create the group.
	if fetchConns < 2 {
		t.Errorf("only %d KeyPackage fetch connections seen", fetchConns)
	}
	if len(mailboxIDs) < 6 {
		t.Fatalf("only %d mailbox IDs seen; the scenario did not run", len(mailboxIDs))
	}

	// The store holds the mailboxes and envelopes: it must hold no
	// identifier of a user. The account database and the log hold
	// accounts: they must hold no mailbox ID. The server log holds neither.
	ms.stop()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	storeFile := read(filepath.Join(ms.dir, config.StoreFile))
	for _, id := range idents {
		if bytes.Contains(storeFile, id) {
			t.Errorf("the message store holds a user identifier %x", id)
		}
	}
	accountsFile := read(filepath.Join(ms.dir, "accounts.db"))
	var ktFiles [][]byte
	filepath.Walk(ms.kt.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			ktFiles = append(ktFiles, read(p))
		}
		return nil
	})
	logText := ms.logs.String()
	for id := range mailboxIDs {
		if bytes.Contains(accountsFile, id[:]) {
			t.Errorf("the account database holds a mailbox ID")
		}
		for _, f := range ktFiles {
			if bytes.Contains(f, id[:]) && !intros[id] {
				t.Errorf("the key-transparency log holds a conversation mailbox ID")
			}
		}
		for _, enc := range []string{hex.EncodeToString(id[:]), base64URL(id[:]), base64Std(id[:])} {
			if strings.Contains(logText, enc) {
				t.Errorf("the server log names a mailbox")
			}
		}
	}
	for _, id := range idents {
		for _, enc := range []string{string(id), hex.EncodeToString(id), base64URL(id), base64Std(id)} {
			if strings.Contains(logText, enc) {
				t.Errorf("the server log names a user (%q)", enc)
			}
		}
	}
	if !strings.Contains(logText, "listening") {
		t.Fatalf("log capture is not working")
	}
}
