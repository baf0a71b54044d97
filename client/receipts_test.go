package client

import (
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/stats"
)

// TestReceiptDelayDistribution draws many delays and checks them against
// the configured exponential CDF with a one-sample KS test.
func TestReceiptDelayDistribution(t *testing.T) {
	for _, d := range []ReceiptDelay{DefaultReceiptDelay, {Mean: 50 * time.Millisecond, Max: time.Second}} {
		xs := make([]float64, 5000)
		for i := range xs {
			x := d.Draw()
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
	}
	if got := DefaultReceiptDelay.draw(0); got != 0 {
		t.Errorf("draw(0) = %v", got)
	}
	if got := DefaultReceiptDelay.draw(0.999999999); got != DefaultReceiptDelay.Max {
		t.Errorf("draw near 1 = %v, want the cap", got)
	}
}
