package accounts

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
)

// TestAttackUsernameEnumeration measures LoginStart for registered and for
// unregistered usernames (RFC 9807 §10.9: the responses, and the time to
// make them, must not tell the two apart). 500 logins of each kind run in
// a random interleaving, so that drift (other processes, CPU frequency,
// GC) falls on both sets alike. KE2 sizes must be identical, and a
// two-sample Kolmogorov–Smirnov test must not reject that the two time
// distributions are the same (p > 0.01, or else in a second run).
func TestAttackUsernameEnumeration(t *testing.T) {
	const (
		n     = 500
		users = 100 // each name is tried n/users times, in both sets
	)
	e := newEnv(t, Options{MaxFailures: 1 << 30, GlobalRate: 1e9, GlobalBurst: 1 << 30, RegisterRate: 1e9, RegisterBurst: 1 << 30})
	known := make([]string, users)
	unknown := make([]string, users)
	for i := range users {
		known[i] = fmt.Sprintf("user%03d", i)
		unknown[i] = fmt.Sprintf("ghost%03d", i)
		e.mustRegister(known[i], "pw", 1)
	}

	type trial struct {
		username string
		known    bool
		ke1      []byte
	}
	trials := make([]trial, 0, 2*n)
	for i := range 2 * n {
		k := i < n
		name := unknown[i%users]
		if k {
			name = known[i%users]
		}
		_, body, err := account.ClientLogin(name, []byte("pw"), []byte(testIdentity), cheapKSF)
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := account.UnmarshalLoginStart(body)
		trials = append(trials, trial{username: name, known: k, ke1: ls.KE1})
	}
	// One measurement: the trials in a fresh random order.
	measure := func() (tKnown, tUnknown []float64) {
		rand.Shuffle(len(trials), func(i, j int) { trials[i], trials[j] = trials[j], trials[i] })
		// Warm up caches and the allocator on both paths.
		for _, tr := range trials[:40] {
			if _, _, err := e.svc.LoginStart(bg, tr.username, tr.ke1); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		for _, tr := range trials {
			start := time.Now()
			ke2, st, err := e.svc.LoginStart(bg, tr.username, tr.ke1)
			d := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if len(ke2) != account.KE2Size {
				t.Fatalf("KE2 of %d bytes for %s (known %v)", len(ke2), tr.username, tr.known)
			}
			if (st.found == 1) != tr.known {
				t.Fatalf("%s: found = %d", tr.username, st.found)
			}
			if tr.known {
				tKnown = append(tKnown, float64(d.Nanoseconds()))
			} else {
				tUnknown = append(tUnknown, float64(d.Nanoseconds()))
			}
		}
		return tKnown, tUnknown
	}
	// A 1 % test rejects equal distributions once in a hundred runs; a
	// real difference is rejected again by a second, independent
	// measurement, chance only once in ten thousand.
	for run := 1; run <= 2; run++ {
		tKnown, tUnknown := measure()
		d, p := ksTest(tKnown, tUnknown)
		t.Logf("run %d: LoginStart median: known %.0f µs, unknown %.0f µs; KS D = %.4f, p = %.4f",
			run, median(tKnown)/1e3, median(tUnknown)/1e3, d, p)
		fmt.Printf("enumeration: ks_p=%.4f d=%.4f n=%d/%d\n", p, d, len(tKnown), len(tUnknown))
		if p > 0.01 {
			return
		}
		if run == 2 {
			t.Fatalf("LoginStart times differ between registered and unknown usernames in two independent runs: KS D = %.4f, p = %.4g", d, p)
		}
	}
}

// ksTest is the two-sample Kolmogorov–Smirnov test: D is the largest
// distance between the two empirical distribution functions, and p its
// asymptotic significance, Q_KS(λ) with λ = (√Ne + 0.12 + 0.11/√Ne)·D and
// Ne = n·m/(n+m) (Stephens' correction, as in Numerical Recipes §14.3).
func ksTest(a, b []float64) (d, p float64) {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	n, m := float64(len(a)), float64(len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		x := min(a[i], b[j])
		for i < len(a) && a[i] == x {
			i++
		}
		for j < len(b) && b[j] == x {
			j++
		}
		d = max(d, math.Abs(float64(i)/n-float64(j)/m))
	}
	ne := math.Sqrt(n * m / (n + m))
	return d, qks((ne + 0.12 + 0.11/ne) * d)
}

// qks is the Kolmogorov distribution's complement,
// Q(λ) = 2 Σ_{k≥1} (-1)^{k-1} exp(-2k²λ²).
func qks(lambda float64) float64 {
	if lambda < 0.2 {
		return 1 // the series converges slowly here; Q is 1 to 1e-10
	}
	sum, sign := 0.0, 1.0
	for k := 1; k <= 100; k++ {
		term := sign * 2 * math.Exp(-2*float64(k*k)*lambda*lambda)
		sum += term
		if math.Abs(term) < 1e-12 {
			break
		}
		sign = -sign
	}
	return min(max(sum, 0), 1)
}

func median(x []float64) float64 {
	x = slices.Clone(x)
	slices.Sort(x)
	return x[len(x)/2]
}

// TestKSTest checks the statistic on known cases, so that the enumeration
// test cannot pass because of a broken test.
func TestKSTest(t *testing.T) {
	// Identical samples: D = 0, p = 1.
	a := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if d, p := ksTest(a, a); d != 0 || p != 1 {
		t.Fatalf("identical: D = %v, p = %v", d, p)
	}
	// Disjoint samples of 500: D = 1, p ≈ 0.
	x, y := make([]float64, 500), make([]float64, 500)
	for i := range x {
		x[i], y[i] = float64(i), float64(1000+i)
	}
	if d, p := ksTest(x, y); d != 1 || p > 1e-100 {
		t.Fatalf("disjoint: D = %v, p = %v", d, p)
	}
	// A shift of 10% of the spread in 500 samples is detected...
	r := rand.New(rand.NewPCG(1, 2))
	for i := range x {
		x[i], y[i] = r.NormFloat64(), r.NormFloat64()+0.3
	}
	if _, p := ksTest(x, y); p > 0.01 {
		t.Fatalf("shift of 0.3σ not detected: p = %v", p)
	}
	// ...and two samples of one distribution are not rejected.
	for i := range x {
		x[i], y[i] = r.NormFloat64(), r.NormFloat64()
	}
	if _, p := ksTest(x, y); p < 0.05 {
		t.Fatalf("same distribution rejected: p = %v", p)
	}
	// Q_KS at known points (Smirnov's table): Q(1.36) ≈ 0.049, Q(1.63) ≈ 0.010.
	if q := qks(1.36); math.Abs(q-0.0494) > 0.001 {
		t.Fatalf("Q(1.36) = %v", q)
	}
	if q := qks(1.63); math.Abs(q-0.0098) > 0.001 {
		t.Fatalf("Q(1.63) = %v", q)
	}
}
