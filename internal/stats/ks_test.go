package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestKolmogorovQ(t *testing.T) {
	// Known values of the Kolmogorov distribution's survival function.
	for _, c := range []struct{ l, q float64 }{{0.5, 0.9639}, {1.0, 0.2700}, {1.36, 0.0494}, {1.63, 0.0098}} {
		if got := KolmogorovQ(c.l); math.Abs(got-c.q) > 5e-4 {
			t.Errorf("Q(%v) = %.4f, want %.4f", c.l, got, c.q)
		}
	}
}

func TestKS(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	exp := func(n int, mean float64) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = r.ExpFloat64() * mean
		}
		return xs
	}
	cdf := func(x float64) float64 { return 1 - math.Exp(-x) }
	if d, p := KSOneSample(exp(500, 1), cdf); p < 0.01 {
		t.Errorf("same distribution rejected: D=%.3f p=%.3g", d, p)
	}
	if d, p := KSOneSample(exp(500, 1.5), cdf); p > 0.001 {
		t.Errorf("different distribution accepted: D=%.3f p=%.3g", d, p)
	}
	if d, p := KSTwoSample(exp(300, 1), exp(200, 1)); p < 0.01 {
		t.Errorf("same distribution rejected: D=%.3f p=%.3g", d, p)
	}
	if d, p := KSTwoSample(exp(300, 1), exp(200, 2)); p > 0.001 {
		t.Errorf("different distributions accepted: D=%.3f p=%.3g", d, p)
	}
	if d, _ := KSTwoSample([]float64{1, 2, 3}, []float64{1, 2, 3}); d != 0 {
		t.Errorf("identical samples: D=%v", d)
	}
}
