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
