package client

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/stats"
)

// TestReceiptDelayDistribution checks the inverse-CDF transform against
// the configured exponential CDF with a one-sample KS test. The uniform
// inputs come from a seeded generator, so the test is deterministic: with
// fresh randomness a correct transform would still fail the 1 % test in
// one run out of a hundred per distribution. Draw itself (the same
// transform of math/rand's uniform) is checked for its range.
func TestReceiptDelayDistribution(t *testing.T) {
	rng := rand.New(rand.NewPCG(20261126, 1))
	for _, d := range []ReceiptDelay{DefaultReceiptDelay, {Mean: 50 * time.Millisecond, Max: time.Second}} {
		xs := make([]float64, 5000)
		for i := range xs {
			x := d.draw(rng.Float64())
			if x < 0 || x > d.Max {
				t.Fatalf("%v: delay %v out of range", d, x)
			}
			xs[i] = float64(x)
		}
		D, p := stats.KSOneSample(xs, func(x float64) float64 { return d.CDF(time.Duration(x)) })
		t.Logf("mean %v max %v: n=%d D=%.4f p=%.3f", d.Mean, d.Max, len(xs), D, p)
		if p < 0.01 {
			t.Errorf("delays do not follow the configured distribution: D=%.4f p=%.3g", D, p)
		}
		for range 1000 {
			if x := d.Draw(); x < 0 || x > d.Max {
				t.Fatalf("%v: Draw gave %v, out of range", d, x)
			}
		}
	}
	if got := DefaultReceiptDelay.draw(0); got != 0 {
		t.Errorf("draw(0) = %v", got)
	}
	if got := DefaultReceiptDelay.draw(0.999999999); got != DefaultReceiptDelay.Max {
		t.Errorf("draw near 1 = %v, want the cap", got)
	}
}
