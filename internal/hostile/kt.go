package hostile

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/quicprochat/qpc/kt"
)

// ForkKT copies the key-transparency directory as it is now and opens the
// copy with the same log and VRF keys, without an epoch loop: the test
// builds the fork's epochs itself (Enqueue, then Tick). From here on the
// two histories may diverge; a client answered from both holds a split
// view.
func (h *Server) ForkKT(t testing.TB) *kt.Directory {
	t.Helper()
	return h.ForkKTWith(t, nil)
}

// ForkKTWith is ForkKT with the copy's options adjusted by adjust (nil:
// none): a witness policy, for a fork that asks witnesses to cosign it.
func (h *Server) ForkKTWith(t testing.TB, adjust func(*kt.DirectoryOptions)) *kt.Directory {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kt-fork")
	if err := h.kt.Backup(dir); err != nil {
		t.Fatal(err)
	}
	o := kt.DirectoryOptions{
		Dir: dir, LogSigner: h.KTKeys.Signer, LogVerifier: h.KTKeys.Verifier, VRFKey: h.KTKeys.VRF,
		EpochInterval: h.kt.Config().EpochInterval, Logger: quiet(),
	}
	if adjust != nil {
		adjust(&o)
	}
	d, err := kt.OpenDirectory(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
