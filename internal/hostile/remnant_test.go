package hostile_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/server/store"
)

// recording is a mailbox store that notes every envelope it is given and
// every message acknowledged; the real store does the work.
type recording struct {
	store.Store
	mu    sync.Mutex
	envs  map[[store.MessageIDSize]byte][]byte
	acked map[[store.MessageIDSize]byte]bool
}

func (r *recording) Put(ctx context.Context, sendID [store.MailboxIDSize]byte, id [store.MessageIDSize]byte, env []byte, q store.Quota, now time.Time, spend *store.Spend) (store.PutResult, error) {
	res, err := r.Store.Put(ctx, sendID, id, env, q, now, spend)
	if err == nil && !res.Duplicate {
		r.mu.Lock()
		r.envs[id] = append([]byte(nil), env...)
		r.mu.Unlock()
	}
	return res, err
}

func (r *recording) Ack(ctx context.Context, receiveID [store.MailboxIDSize]byte, ids [][store.MessageIDSize]byte) (int, error) {
	n, err := r.Store.Ack(ctx, receiveID, ids)
	if err == nil {
		r.mu.Lock()
		for _, id := range ids {
			r.acked[id] = true
		}
		r.mu.Unlock()
	}
	return n, err
}

// TestHostileDiskImageAfterAck plays an adversary who takes the server's
// disk after the recipient has read and acknowledged its messages (a
// seized server, a stolen backup, an operator who images the data
// directory): every file under the data directory — the message store,
// its key-slot file, the account and key-transparency files, anything —
// is searched for any 32 bytes of any envelope bob acknowledged, after a
// purge cycle and with the store closed. None may be found. With
// plaintext records bbolt kept every acknowledged envelope readable in a
// freed page of qpc.db (issue 17, item 8).
func TestHostileDiskImageAfterAck(t *testing.T) {
	rec := &recording{envs: map[[store.MessageIDSize]byte][]byte{}, acked: map[[store.MessageIDSize]byte]bool{}}
	h := hostile.Start(t, hostile.Options{WrapStore: func(s store.Store) store.Store { rec.Store = s; return rec }})
	alice, bob := pair(t, h)
	ctx := ctxT(t)
	var sent []string
	for range 12 {
		text := rand.Text() + rand.Text() // recognisable: 52 random characters
		sent = append(sent, "alice: "+text)
		if err := alice.Send(ctx, "bob", text); err != nil {
			t.Fatal(err)
		}
	}
	if got := texts(t, bob); strings.Join(got, "\n") != strings.Join(sent, "\n") {
		t.Fatalf("bob got %q", got)
	}
	texts(t, alice)
	// The purge cycle the server runs, and the store closed as at a stop.
	if _, err := h.Store().PurgeExpired(ctx, h.Clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := h.Store().Close(); err != nil {
		t.Fatal(err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	windows := map[[32]byte]bool{}
	acked := 0
	for id, env := range rec.envs {
		if !rec.acked[id] {
			continue
		}
		acked++
		for i := 0; i+32 <= len(env); i++ {
			windows[[32]byte(env[i:i+32])] = true
		}
	}
	if acked < len(sent) {
		t.Fatalf("only %d of the %d envelopes stored were acknowledged; want at least the %d sent", acked, len(rec.envs), len(sent))
	}
	files := 0
	err := filepath.WalkDir(h.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found := 0
		for i := 0; i+32 <= len(data); i++ {
			if windows[[32]byte(data[i:i+32])] {
				found++
			}
		}
		if found > 0 {
			rel, _ := filepath.Rel(h.Dir, path)
			t.Errorf("%s holds %d 32-byte windows of acknowledged envelopes", rel, found)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 {
		t.Fatalf("searched %d files", files)
	}
	t.Logf("searched %d files for %d acknowledged envelopes", files, acked)
}

// TestHostileLogKeepsNoRegistrationTime plays an adversary who reads the
// server's log at its default level (Info): accounts.db keeps when an
// account was registered to the hour, and the log must not keep more. A
// log record always carries its exact time, so no record at Info may be
// about a registration at all.
func TestHostileLogKeepsNoRegistrationTime(t *testing.T) {
	h := hostile.Start(t, hostile.Options{})
	before := len(strings.Split(h.Logs(), "\n"))
	c := h.NewUser(t, "carol", "carol")
	if _, err := c.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(h.Logs(), "\n")
	for _, line := range lines[before-1:] {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if strings.Contains(strings.ToLower(line), "regist") || strings.Contains(line, "carol") ||
			strings.Contains(line, hex.EncodeToString([]byte("carol"))) {
			t.Errorf("the log keeps the exact time (%v) of a registration: %s", r["time"], line)
		}
	}
}
