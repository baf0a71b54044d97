package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/wire"
)

// TestEmptyHomeRefused: the SDK reads no environment. Init, Open and
// RestoreBackup with an empty Options.Home fail with ErrNoHome, and
// nothing is created where QPC_HOME, XDG_DATA_HOME or HOME point: the SDK
// used to fall back on them, so that a program (or a test) that forgot
// Home wrote its state under the user's real ~/.local/share/qpc.
func TestEmptyHomeRefused(t *testing.T) {
	env := t.TempDir()
	for _, k := range []string{"QPC_HOME", "XDG_DATA_HOME", "HOME"} {
		t.Setenv(k, filepath.Join(env, k))
	}
	_, vkey, err := note.GenerateKey(rand.Reader, "qpc-kt-test")
	if err != nil {
		t.Fatal(err)
	}
	pin := protocol.KTPin{VKey: vkey, VRFKey: make([]byte, 32), ConfigHash: [32]byte{1}}
	if _, err := pin.Verifier(); err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Passphrase: []byte("pass"),
		KDF:        &state.Options{Time: 1, MemoryKiB: 64, Threads: 1},
		// Nothing listens there: were the state made, the check of the
		// server would fail fast.
		Dial: protocol.Options{HandshakeTimeout: 300 * time.Millisecond, MaxAttempts: 1},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Init(ctx, wire.Address{Host: "127.0.0.1:9"}.String(), pin, opts); !errors.Is(err, ErrNoHome) {
		t.Errorf("Init with no Home: %v, want ErrNoHome", err)
	}
	if _, err := Open(opts); !errors.Is(err, ErrNoHome) {
		t.Errorf("Open with no Home: %v, want ErrNoHome", err)
	}
	noPass := func(int) ([]byte, error) { return []byte("backup pass"), nil }
	if _, err := RestoreBackup(ctx, bytes.NewReader(nil), noPass, opts); !errors.Is(err, ErrNoHome) {
		t.Errorf("RestoreBackup with no Home: %v, want ErrNoHome", err)
	}
	left, err := os.ReadDir(env)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("%s created under the environment's directories", e.Name())
	}
}
