package stats

import "math"

// Wilson returns the Wilson score interval for a proportion of k successes
// in n trials at the normal quantile z (1.959964 for 95 %): the interval
// of true proportions p for which k/n lies within z standard errors
// √(p(1-p)/n) of p (Wilson 1927). Unlike the normal approximation it
// stays inside [0, 1] and is usable near 0 and 1. n = 0 gives [0, 1].
func Wilson(k, n int, z float64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	nf := float64(n)
	p := float64(k) / nf
	z2 := z * z
	den := 1 + z2/nf
	mid := (p + z2/(2*nf)) / den
	half := z / den * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf))
	return max(mid-half, 0), min(mid+half, 1)
}

// Z95 is the two-sided 95 % normal quantile.
const Z95 = 1.959963984540054
