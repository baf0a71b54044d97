package report

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/server"
)

// KTResult is the key-transparency figure: a directory of Labels labels,
// built in BuildTime, and the cost of one lookup proof against it.
type KTResult struct {
	Labels     int
	Epochs     int
	BuildTime  time.Duration
	ProofBytes int // the lookup proof without the value
	Prove      Measure
	Verify     Measure
	Baseline   Measure // one Ed25519 verification
}

// ktEpochSize is the most updates one epoch takes (kt's maxPerEpoch).
const ktEpochSize = 10_000

// ktFigures builds a directory of n labels through the public API, one
// epoch of ktEpochSize publishes at a time (the VRF proofs made by
// GOMAXPROCS goroutines, as concurrent publishers would), then measures
// Directory.Lookup (proof generation) and Verifier.VerifyLookup for a
// label in the middle, against one Ed25519 verification.
func ktFigures(ctx context.Context, n, rounds int, progress io.Writer) (KTResult, error) {
	if n < 1 {
		return KTResult{}, fmt.Errorf("kt: %d labels", n)
	}
	dir, cleanup, err := tempDir("qpc-bench-kt-")
	if err != nil {
		return KTResult{}, err
	}
	defer cleanup()
	keys, err := server.LoadOrCreateKTKeys(dir)
	if err != nil {
		return KTResult{}, err
	}
	d, err := kt.OpenDirectory(ctx, kt.DirectoryOptions{
		Dir: dir, LogSigner: keys.Signer, LogVerifier: keys.Verifier, VRFKey: keys.VRF,
		EpochInterval: time.Hour, // epochs are ticked by hand
	})
	if err != nil {
		return KTResult{}, err
	}
	defer d.Close()
	label := func(i int) string { return fmt.Sprintf("user%08d", i) }
	value := []byte("a 64-byte stand-in for an identity key and its mailbox binding..")

	res := KTResult{Labels: n}
	start := time.Now()
	workers := runtime.GOMAXPROCS(0)
	for done := 0; done < n; done += ktEpochSize {
		m := min(ktEpochSize, n-done)
		chs := make([]<-chan kt.Published, m)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < m; i += workers {
					chs[i], errs[w] = d.Enqueue(label(done+i), value)
					if errs[w] != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return res, err
			}
		}
		if _, err := d.Tick(ctx); err != nil {
			return res, err
		}
		res.Epochs++
		for _, ch := range chs {
			if p := <-ch; p.Err != nil {
				return res, p.Err
			}
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if progress != nil && (done+m)%100_000 == 0 {
			fmt.Fprintf(progress, "qpc-bench report: kt: %d labels in %v\n", done+m, time.Since(start).Round(time.Second))
		}
	}
	res.BuildTime = time.Since(start)

	target := label(n / 2)
	p, err := d.Lookup(ctx, target, 0)
	if err != nil {
		return res, err
	}
	res.ProofBytes = len(p.Marshal()) - len(p.Value)
	v, err := kt.NewVerifierFromConfig(keys.VKey, d.Config())
	if err != nil {
		return res, err
	}
	if _, err := v.VerifyLookup(target, p); err != nil {
		return res, fmt.Errorf("kt: the lookup proof does not verify: %w", err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 64)
	sig := ed25519.Sign(priv, msg)
	var set benchSet
	prove := set.add(fmt.Sprintf("Directory.Lookup proof, %d labels", n), func(b *testing.B) {
		for b.Loop() {
			_, err := d.Lookup(ctx, target, 0)
			must(b, err)
		}
	})
	verify := set.add("Verifier.VerifyLookup", func(b *testing.B) {
		for b.Loop() {
			_, err := v.VerifyLookup(target, p)
			must(b, err)
		}
	})
	base := set.add("Ed25519 verify (64 bytes)", func(b *testing.B) {
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("ed25519: bad signature")
			}
		}
	})
	m, err := set.run(rounds)
	if err != nil {
		return res, err
	}
	res.Prove, res.Verify, res.Baseline = m[prove], m[verify], m[base]
	return res, nil
}
