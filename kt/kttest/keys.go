package kttest

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/vrf"
)

// Keys are a log's keys: its checkpoint signer, the matching verifier and
// its text form, and the VRF key that hides labels.
type Keys struct {
	Signer   note.Signer
	Verifier note.Verifier
	VKey     string // the verifier key, as note.NewVerifier reads it
	VRF      *vrf.PrivateKey
}

// NewKeys makes fresh keys for a log named origin.
func NewKeys(t testing.TB, origin string) Keys {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	k, err := vrf.NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	return Keys{Signer: s, Verifier: v, VKey: vkey, VRF: k}
}

// OpenDirectory opens a real directory in dir with k, logging nowhere and
// without its epoch loop (the test makes epochs with Tick); it is closed
// when the test ends.
func OpenDirectory(t testing.TB, dir string, k Keys) *kt.Directory {
	t.Helper()
	d, err := kt.OpenDirectory(context.Background(), kt.DirectoryOptions{
		Dir: dir, LogSigner: k.Signer, LogVerifier: k.Verifier, VRFKey: k.VRF,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
