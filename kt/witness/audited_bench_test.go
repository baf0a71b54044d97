package witness_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/audit"
	"github.com/quicprochat/qpc/kt/kttest"
	"github.com/quicprochat/qpc/kt/witness"
)

// BenchmarkAuditedPublish is what an auditing witness adds to checkpoint
// publication: one epoch (Tick: the tree, the bbolt commit, the log
// append and the wait for its checkpoint) of a real directory that
// publishes only checkpoints cosigned under a one-witness policy, the
// witness on loopback HTTP either plain or auditing (kt/audit's
// CheckTree as its Check, reading the directory's update lists over
// HTTP, as `qpc-server witness --audit` does), against the same directory
// without witnesses, in one run. publishes is the number of publishes per
// epoch (4: the default padding alone).
func BenchmarkAuditedPublish(b *testing.B) {
	for _, publishes := range []int{0, 100} {
		for _, mode := range []string{"none", "witness", "auditing"} {
			b.Run(fmt.Sprintf("%s/publishes=%d", mode, publishes), func(b *testing.B) {
				d := benchDirectory(b, mode)
				ctx := context.Background()
				b.ResetTimer()
				for i := range b.N {
					for j := range publishes {
						if _, err := d.Enqueue(fmt.Sprintf("user-%d-%d", i, j), []byte("a binding")); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := d.Tick(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func benchDirectory(b *testing.B, mode string) *kt.Directory {
	b.Helper()
	k := kttest.NewKeys(b, "kt.bench/log")
	o := kt.DirectoryOptions{Dir: b.TempDir(), LogSigner: k.Signer, LogVerifier: k.Verifier, VRFKey: k.VRF, Logger: quiet()}
	if mode != "none" {
		var served atomic.Pointer[http.Handler]
		logSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h := served.Load(); h != nil {
				(*h).ServeHTTP(w, r)
				return
			}
			http.Error(w, "opening", http.StatusServiceUnavailable)
		}))
		b.Cleanup(logSrv.Close)
		o.Opened = func(d *kt.Directory) {
			h := d.Handler("/kt")
			served.Store(&h)
		}
		l := witness.Log{Origin: k.Verifier.Name(), Verifier: k.Verifier}
		if mode == "auditing" {
			a, err := audit.Open(filepath.Join(b.TempDir(), "audit.db"), audit.Options{Log: audit.HTTPLog(logSrv.URL+"/kt", nil), Verifier: k.Verifier})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { a.Close() })
			l.Check = func(ctx context.Context, _, nt witness.Tree, cp []byte) error {
				return a.CheckTree(ctx, nt.Size, nt.Root, cp)
			}
		}
		w := openWitness(b, b.TempDir(), l)
		p, err := kt.ParseWitnessPolicy(fmt.Sprintf("witness w %s %s\nquorum w\n", w.VerifierKey(), w.srv.URL))
		if err != nil {
			b.Fatal(err)
		}
		o.WitnessPolicy = p
	}
	d, err := kt.OpenDirectory(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}
