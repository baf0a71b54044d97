package logkeys

import (
	"crypto/rand"
	"testing"

	"golang.org/x/mod/sumdb/note"

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

// New makes fresh keys for a log named origin.
func New(t testing.TB, origin string) Keys {
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
