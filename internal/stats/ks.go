package stats

import (
	"math"
	"slices"
)

// KSOneSample returns the Kolmogorov–Smirnov statistic D of the sample xs
// against the continuous CDF cdf, and its asymptotic p-value.
func KSOneSample(xs []float64, cdf func(float64) float64) (d, p float64) {
	n := len(xs)
	if n == 0 {
		return 0, 1
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	for i, x := range s {
		f := cdf(x)
		d = max(d, f-float64(i)/float64(n), float64(i+1)/float64(n)-f)
	}
	return d, KolmogorovQ(lambda(float64(n), d))
}

// KSTwoSample returns the two-sample Kolmogorov–Smirnov statistic D of a
// and b (the largest distance between their empirical CDFs) and its
// asymptotic p-value.
func KSTwoSample(a, b []float64) (d, p float64) {
	if len(a) == 0 || len(b) == 0 {
		return 0, 1
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	i, j := 0, 0
	for i < len(x) && j < len(y) {
		v := min(x[i], y[j])
		for i < len(x) && x[i] <= v {
			i++
		}
		for j < len(y) && y[j] <= v {
			j++
		}
		d = max(d, math.Abs(float64(i)/float64(len(x))-float64(j)/float64(len(y))))
	}
	n, m := float64(len(x)), float64(len(y))
	return d, KolmogorovQ(lambda(n*m/(n+m), d))
}

// lambda is Stephens' finite-sample correction of the KS statistic for an
// effective sample size ne.
func lambda(ne, d float64) float64 {
	s := math.Sqrt(ne)
	return (s + 0.12 + 0.11/s) * d
}

// KolmogorovQ is the survival function of the Kolmogorov distribution,
// Q(λ) = 2 Σ_{j≥1} (−1)^{j−1} exp(−2 j² λ²): the asymptotic p-value of a
// KS statistic scaled to λ.
func KolmogorovQ(l float64) float64 {
	if l < 1e-3 {
		return 1
	}
	sum, sign := 0.0, 1.0
	for j := 1; j <= 100; j++ {
		t := sign * 2 * math.Exp(-2*float64(j*j)*l*l)
		sum += t
		if math.Abs(t) < 1e-12*math.Abs(sum) || math.Abs(t) < 1e-300 {
			return min(max(sum, 0), 1)
		}
		sign = -sign
	}
	return 1 // the series did not converge: λ is tiny, Q is 1
}
