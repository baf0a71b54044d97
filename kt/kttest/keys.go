package kttest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest/logkeys"
)

// Keys are a log's keys (logkeys.Keys): its checkpoint signer, the
// matching verifier and its text form, and the VRF key that hides labels.
type Keys = logkeys.Keys

// NewKeys makes fresh keys for a log named origin (logkeys.New).
func NewKeys(t testing.TB, origin string) Keys { return logkeys.New(t, origin) }

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

// Lookup looks label up in d as a client does: the proof goes through
// its wire encoding and v verifies it (v's known size moves on). Lookup
// and decoding failures fail t; the verifier's refusal is returned.
func Lookup(t testing.TB, d *kt.Directory, v *kt.Verifier, label string) (*kt.LookupResult, error) {
	t.Helper()
	p, err := d.Lookup(context.Background(), label, v.KnownSize())
	if err != nil {
		t.Fatal(err)
	}
	q, err := kt.ParseLookupProof(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return v.VerifyLookup(label, q)
}
