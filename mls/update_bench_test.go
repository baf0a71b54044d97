package mls

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkUpdateVsEncrypt puts the cost of healing next to the cost of
// a message (issue 20, docs/benchmarks.md "MLS update commit against one
// message"): in groups of 2, 16 and 128 members (X-Wing suite), one
// member's update commit (an empty commit with a fresh path), another
// member processing it, and the baseline: one application message
// Encrypt (a 100-byte text) in the same group. The group is built by one
// commit of n-1 Adds followed by an update of every other member, so
// every parent node has keys: the steady state of a group whose
// members update on a schedule (a commit encrypts to one node per copath
// subtree, log2 n of them), unlike BenchmarkCommit's worst case. Each op
// starts from a copy of the same state.
//
// The paired sub-benchmarks time the three back to back in every
// iteration and report their ratios (commit/encrypt, process/encrypt),
// which a loaded machine disturbs least. For the figures, run it in
// rounds and take medians, e.g. five rounds of one compiled binary:
//
//	go test -c -o /tmp/mls.test ./mls
//	for i in 1 2 3 4 5; do /tmp/mls.test -test.run '^$' -test.bench UpdateVsEncrypt -test.benchtime 300ms; done
func BenchmarkUpdateVsEncrypt(b *testing.B) {
	for _, n := range []int{2, 16, 128} {
		var fx *updateFixture
		fixture := func(b *testing.B) *updateFixture {
			if fx == nil {
				fx = newUpdateFixture(b, n)
			}
			return fx
		}
		// paired times the three ops back to back in every iteration and
		// reports their ratios: on a loaded machine each pair of figures
		// then saw the same load.
		b.Run(fmt.Sprintf("members=%d/paired", n), func(b *testing.B) {
			f := fixture(b)
			text := make([]byte, 100)
			g := f.committer.clone()
			var enc, commit, process time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := g.Encrypt(text); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				c := f.committer.clone()
				t2 := time.Now()
				res, err := c.Update()
				if err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				r := f.receiver.clone()
				t4 := time.Now()
				if _, err := r.ProcessMessage(res.Commit); err != nil {
					b.Fatal(err)
				}
				t5 := time.Now()
				enc, commit, process = enc+t1.Sub(t0), commit+t3.Sub(t2), process+t5.Sub(t4)
			}
			b.ReportMetric(float64(commit)/float64(enc), "commit/encrypt")
			b.ReportMetric(float64(process)/float64(enc), "process/encrypt")
			b.ReportMetric(float64(enc.Nanoseconds())/float64(b.N), "encrypt-ns")
		})
		b.Run(fmt.Sprintf("members=%d/encrypt", n), func(b *testing.B) {
			f := fixture(b)
			text := make([]byte, 100)
			g := f.committer.clone()
			for b.Loop() {
				if _, err := g.Encrypt(text); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("members=%d/update-commit", n), func(b *testing.B) {
			f := fixture(b)
			for b.Loop() {
				if _, err := f.committer.clone().Update(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("members=%d/update-process", n), func(b *testing.B) {
			f := fixture(b)
			res, err := f.committer.clone().Update()
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := f.receiver.clone().ProcessMessage(res.Commit); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// updateFixture is a group of n members in which every member has
// committed an update, seen by the last member (the committer) and by
// the first (the receiver).
type updateFixture struct {
	committer, receiver *Group
}

func newUpdateFixture(b *testing.B, n int) *updateFixture {
	b.Helper()
	tg := newTestGroup(b, SuiteXWingChaCha20Poly1305SHA256Ed25519, nil)
	tg.add(tg.members[0], n-1)
	// Every parent node's subtree holds an even leaf, so updates of the
	// even leaves give every parent keys. Each is processed only by the
	// even leaves that commit after it (and the committer and receiver
	// below, the last and the first leaf, are among them): O(n²/8)
	// processings, not n².
	for i := 0; i < n; i += 2 {
		res, err := tg.members[i].g.Update()
		if err != nil {
			b.Fatal(err)
		}
		for j := i + 2; j < n; j += 2 {
			if _, err := tg.members[j].g.ProcessMessage(res.Commit); err != nil {
				b.Fatal(err)
			}
		}
		for _, j := range []int{0, n - 1} {
			if j != i && j%2 == 1 || j == 0 && i != 0 {
				if _, err := tg.members[j].g.ProcessMessage(res.Commit); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	c, r := tg.members[n-1].g, tg.members[0].g
	if c.Epoch() != r.Epoch() || string(c.EpochAuthenticator()) != string(r.EpochAuthenticator()) {
		b.Fatal("committer and receiver disagree")
	}
	return &updateFixture{committer: c, receiver: r}
}
