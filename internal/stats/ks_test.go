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

func TestWilson(t *testing.T) {
	// Reference values (e.g. R's prop.test without continuity correction,
	// or Newcombe 1998, table I).
	for _, c := range []struct {
		k, n   int
		lo, hi float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{20, 20, 0.8389, 1},
		{300, 600, 0.4601, 0.5399},
	} {
		lo, hi := Wilson(c.k, c.n, Z95)
		if math.Abs(lo-c.lo) > 5e-4 || math.Abs(hi-c.hi) > 5e-4 {
			t.Errorf("Wilson(%d, %d) = [%.4f, %.4f], want [%.4f, %.4f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
	if lo, hi := Wilson(0, 0, Z95); lo != 0 || hi != 1 {
		t.Errorf("Wilson(0, 0) = [%v, %v]", lo, hi)
	}
}
