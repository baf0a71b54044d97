package attack

import (
	"math"
	"slices"
	"sort"
)

// sizer is size analysis: the histogram of buckets each mailbox
// receives; a target's candidates are ranked by cosine similarity of
// their histograms with the target's (a conversation's messages have a
// size profile, which padding buckets blur). Only mailboxes the attacker
// can name (intro mailboxes) and the targets are tracked, so memory is
// bounded by the identities.
type sizer struct {
	idx  map[int]int
	hist map[string][]float64
}

func newSizer() *sizer { return &sizer{idx: map[int]int{}, hist: map[string][]float64{}} }

func (s *sizer) observe(e *Event) {
	if e.Bucket <= 0 {
		return
	}
	i, ok := s.idx[e.Bucket]
	if !ok {
		i = len(s.idx)
		s.idx[e.Bucket] = i
	}
	h := s.hist[e.Mailbox]
	for len(h) <= i {
		h = append(h, 0)
	}
	h[i]++
	s.hist[e.Mailbox] = h
}

func cosine(a, b []float64) float64 {
	var dot, na, nb float64
	for i := range max(len(a), len(b)) {
		var x, y float64
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		dot += x * y
		na += x * x
		nb += y * y
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}

func (s *sizer) result(r *Runner) Result {
	res := Result{Attack: "size"}
	for _, tm := range r.targets {
		th := s.hist[tm.mailbox]
		var gs []Guess
		var n float64
		for _, v := range th {
			n += v
		}
		if n > 0 {
			for m := range r.byMbox {
				if m == tm.mailbox {
					continue
				}
				if c := cosine(th, s.hist[m]); c > 0 {
					gs = append(gs, r.guess(m, c))
				}
			}
		}
		t := finish(tm, int(n), nil, gs, r.opt.Top)
		if len(t.Final) > 0 {
			t.Steps = []Step{{T: r.now, K: int(n), Top: t.Final[0], Unique: len(t.Final) == 1 || t.Final[0].Score > t.Final[1].Score}}
		}
		res.Targets = append(res.Targets, t)
	}
	return res
}

func sortStrings(s []string) { sort.Strings(s) }

func sortGroups(g [][]string) {
	slices.SortFunc(g, func(a, b []string) int {
		if a[0] < b[0] {
			return -1
		}
		if a[0] > b[0] {
			return 1
		}
		return 0
	})
}
