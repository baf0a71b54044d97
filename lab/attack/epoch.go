package attack

import (
	"math"
	"math/rand/v2"
	"sort"
)

// epochAttack is the SDA counted as Martiny et al. (NDSS 2021) count it:
// time is cut into fixed epochs (a grid from time 0, not anchored at any
// delivery). An epoch in which the target mailbox receives is a target
// epoch; every mailbox that receives in it or in the Span-1 epochs after it
// scores +1, once per target epoch however often it receives there. For
// each target epoch one random earlier epoch range of the same length in
// which the target did not receive (a "non-target epoch") is drawn, and
// every mailbox receiving in it scores -1: the paper's estimate of the
// background. The attacker names the highest score; it has linked when
// that score is unique.
//
// It is a weaker attacker than sda, which knows each delivery's time to
// the nanosecond, opens its window exactly there, and subtracts an
// expected count rather than one noisy sample.
type epochAttack struct {
	epoch   int64 // ns
	span    int64 // epochs counted per target epoch, the target's own first
	bgRange int64 // background ranges are drawn from this many past epochs
	rng     *rand.Rand
	st      []*estate
	active  []int // targets with open windows
	ring    []sendRec
	first   int64 // the record's first epoch
	started bool
}

type ewin struct {
	first int64 // epoch
	end   int64 // the end of the target epoch (ns), the step's T
	set   map[string]struct{}
}

type estate struct {
	tstate
	open []ewin
	// tw are the first epochs of this target's recent target windows, to
	// keep background ranges off them.
	tw []int64
}

func newEpochAttack(n int, epoch, span, bgRange int64, seed uint64) *epochAttack {
	a := &epochAttack{epoch: epoch, span: span, bgRange: bgRange,
		rng: rand.New(rand.NewPCG(seed, 0x5344412d65706f63))} // "SDA-epoc"
	for range n {
		a.st = append(a.st, &estate{tstate: tstate{hits: map[string]float64{}}})
	}
	return a
}

// epochOf is the epoch holding t (floor division: t may be negative).
func (a *epochAttack) epochOf(t int64) int64 {
	e := t / a.epoch
	if t%a.epoch < 0 {
		e--
	}
	return e
}

func (a *epochAttack) observe(r *Runner, t int64, m string) {
	x := a.epochOf(t)
	if !a.started {
		a.first, a.started = x, true
	}
	a.expire(r, x)
	for _, i := range a.active {
		s := a.st[i]
		own := r.targets[i].mailbox
		for _, w := range s.open {
			if m != own {
				a.count(s, w, m)
			}
		}
	}
	a.ring = append(a.ring, sendRec{t, m})
	if cut := a.cut(x); cut > len(a.ring)/2 {
		a.ring = append(a.ring[:0], a.ring[cut:]...)
	}
	for _, i := range r.tByMbox[m] {
		a.target(r, i, x)
	}
}

// cut is how many ring entries are too old to be drawn as background.
func (a *epochAttack) cut(x int64) int {
	return a.from((x - a.bgRange - a.span) * a.epoch)
}

// from is the index of the first ring entry at or after t.
func (a *epochAttack) from(t int64) int {
	return sort.Search(len(a.ring), func(j int) bool { return a.ring[j].t >= t })
}

func (a *epochAttack) count(s *estate, w ewin, m string) {
	if _, ok := w.set[m]; ok {
		return
	}
	w.set[m] = struct{}{}
	s.hits[m]++
}

// target handles a receive of target i's mailbox in epoch x.
func (a *epochAttack) target(r *Runner, i int, x int64) {
	s := a.st[i]
	if n := len(s.tw); n > 0 && s.tw[n-1] == x {
		return // already a target epoch
	}
	own := r.targets[i].mailbox
	w := ewin{first: x, end: (x+1)*a.epoch - 1, set: map[string]struct{}{}}
	if len(s.open) == 0 {
		a.active = append(a.active, i)
	}
	// The whole epoch counts, also what came before the target's receive.
	for j := len(a.ring) - 1; j >= 0 && a.epochOf(a.ring[j].t) == x; j-- {
		if mb := a.ring[j].mb; mb != own {
			a.count(s, w, mb)
		}
	}
	s.open = append(s.open, w)
	keep := s.tw[:0]
	for _, f := range s.tw {
		if f >= x-a.bgRange-a.span {
			keep = append(keep, f)
		}
	}
	s.tw = append(keep, x)
	a.background(s, own, x)
}

// background subtracts one random past range of span epochs, within
// bgRange epochs before x, that overlaps none of the target's windows
// (Martiny et al.'s random non-target epoch). Early in the record, where
// no such range exists yet, nothing is subtracted.
func (a *epochAttack) background(s *estate, own string, x int64) {
	lo, hi := max(a.first, x-a.bgRange), x-a.span // candidate first epochs
	if hi < lo {
		return
	}
	for range 16 {
		b := lo + a.rng.Int64N(hi-lo+1)
		clash := false
		for _, f := range s.tw {
			if b < f+a.span && f < b+a.span {
				clash = true
				break
			}
		}
		if clash {
			continue
		}
		seen := map[string]struct{}{}
		end := (b + a.span) * a.epoch
		for _, e := range a.ring[a.from(b*a.epoch):] {
			if e.t >= end {
				break
			}
			if e.mb == own {
				continue
			}
			if _, ok := seen[e.mb]; !ok {
				seen[e.mb] = struct{}{}
				s.hits[e.mb]--
			}
		}
		return
	}
}

// expire closes the windows that end before epoch x.
func (a *epochAttack) expire(r *Runner, x int64) {
	keep := a.active[:0]
	for _, i := range a.active {
		s := a.st[i]
		n := 0
		for n < len(s.open) && (x == math.MaxInt64 || s.open[n].first+a.span <= x) {
			s.k++
			if evalAt(s.k) || (x == math.MaxInt64 && n == len(s.open)-1) {
				r.record(&s.tstate, r.targets[i].mailbox, s.open[n].end)
			}
			n++
		}
		s.open = s.open[n:]
		if len(s.open) > 0 {
			keep = append(keep, i)
		}
	}
	a.active = keep
}

func (a *epochAttack) result(r *Runner) Result {
	a.expire(r, math.MaxInt64)
	res := Result{Attack: "sda-epoch"}
	for i, tm := range r.targets {
		s := a.st[i]
		var gs []Guess
		for m, h := range s.hits {
			if m != tm.mailbox && h != 0 {
				gs = append(gs, r.guess(m, h))
			}
		}
		res.Targets = append(res.Targets, finish(tm, s.k, s.steps, gs, r.opt.Top))
	}
	return res
}
