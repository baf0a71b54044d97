package attack

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// Options configure a run of the attacks.
type Options struct {
	// Identities is what key transparency tells any server: handle ->
	// intro mailbox (hex). Guesses that land on one of these mailboxes
	// resolve to the handle.
	Identities map[string]string
	// Targets are the handles the attacker aims at; each is attacked
	// through its intro mailbox (the only mailbox public knowledge ties to
	// it).
	Targets []string
	// TargetMailboxes are further targets given as mailboxes (for
	// mailbox-level figures: which mailbox is on the other end).
	TargetMailboxes []string
	// Window is the SDA's receipt window after a target receives (default
	// 1 s, Martiny et al.'s epoch).
	Window int64
	// Epoch is sda-epoch's fixed epoch (default 1 s, Martiny et al.'s);
	// EpochSpan the epochs it counts per target epoch, the target's own
	// first (default 2: a receipt 0.5 s after a delivery lands in the
	// delivery's epoch or the next). Seed draws its background epochs.
	Epoch     int64
	EpochSpan int
	Seed      uint64
	// Tau is the timing attack's kernel time constant (default 30 s,
	// qpc's receipt jitter mean); its window is 6 Tau.
	Tau int64
	// Bin is the activity attack's half-width (default 60 s).
	Bin int64
	// Attacks names the attacks to run (default: all of Names).
	Attacks []string
	// Top is the length of each final ranking (default 10).
	Top int
}

// Names are the attacks, in report order.
var Names = []string{"sda", "sda-epoch", "intersection", "timing", "activity", "linking", "size"}

const second = int64(1e9)

// epochBackground is how many past epochs sda-epoch draws its background
// epochs from.
const epochBackground = 300

// Guess is one candidate mailbox with its score; Handle is set when the
// attacker can name its owner (an intro mailbox).
type Guess struct {
	Mailbox string  `json:"mailbox"`
	Handle  string  `json:"handle,omitempty"`
	Score   float64 `json:"score"`
}

// Step records the attacker's top guess after K target messages (the
// target mailbox's receives whose windows have closed), when it changed.
// Unique is false when the top score is tied.
type Step struct {
	T      int64 `json:"t"`
	K      int   `json:"k"`
	Top    Guess `json:"top"`
	Unique bool  `json:"unique"`
	// Set is the intersection attack's anonymity set: candidates in every
	// window so far.
	Set int `json:"set,omitempty"`
}

// Target is one attack's outcome for one target.
type Target struct {
	Handle  string  `json:"handle,omitempty"`
	Mailbox string  `json:"mailbox"`
	K       int     `json:"k"` // target messages seen
	Steps   []Step  `json:"steps"`
	Final   []Guess `json:"final"`
	// Entropy is the Shannon entropy (bits) of the attacker's final
	// belief, the positive scores normalised (0 when nothing is scored).
	Entropy float64 `json:"entropy"`
}

// Result is one attack's outcome.
type Result struct {
	Attack  string   `json:"attack"`
	Targets []Target `json:"targets"`
	// Groups (linking only) are the sets of mailboxes the attacker holds
	// to be one client's, of size two or more.
	Groups [][]string `json:"groups,omitempty"`
}

// Runner holds the state of every attack over one record.
type Runner struct {
	opt     Options
	byMbox  map[string]string // intro mailbox -> handle
	targets []*tmeta
	tByMbox map[string][]int // mailbox -> indexes into targets
	bg      *cms
	start   int64
	started bool
	now     int64
	ring    []sendRec // recent receives, for windows that look back
	ringLen int64
	wins    []*winAttack
	ep      *epochAttack
	link    *linker
	size    *sizer
}

type tmeta struct {
	handle, mailbox string
}

type sendRec struct {
	t  int64
	mb string
}

// New returns a Runner for opt.
func New(opt Options) (*Runner, error) {
	if opt.Window <= 0 {
		opt.Window = second
	}
	if opt.Epoch <= 0 {
		opt.Epoch = second
	}
	if opt.EpochSpan <= 0 {
		opt.EpochSpan = 2
	}
	if opt.Tau <= 0 {
		opt.Tau = 30 * second
	}
	if opt.Bin <= 0 {
		opt.Bin = 60 * second
	}
	if opt.Top <= 0 {
		opt.Top = 10
	}
	if len(opt.Attacks) == 0 {
		opt.Attacks = Names
	}
	r := &Runner{opt: opt, byMbox: map[string]string{}, tByMbox: map[string][]int{}, bg: newCMS()}
	for h, m := range opt.Identities {
		r.byMbox[m] = h
	}
	for _, h := range opt.Targets {
		m, ok := opt.Identities[h]
		if !ok {
			return nil, fmt.Errorf("attack: target %q has no intro mailbox in the identities", h)
		}
		r.addTarget(h, m)
	}
	for _, m := range opt.TargetMailboxes {
		r.addTarget(r.byMbox[m], m)
	}
	for _, name := range opt.Attacks {
		switch name {
		case "sda":
			r.wins = append(r.wins, r.newWin(name, 0, opt.Window, func(int64) float64 { return 1 }, float64(opt.Window), false))
		case "sda-epoch":
			r.ep = newEpochAttack(len(r.targets), opt.Epoch, int64(opt.EpochSpan), epochBackground, opt.Seed)
		case "intersection":
			r.wins = append(r.wins, r.newWin(name, 0, opt.Window, func(int64) float64 { return 1 }, float64(opt.Window), true))
		case "timing":
			tau := float64(opt.Tau)
			w := 6 * opt.Tau
			r.wins = append(r.wins, r.newWin(name, 0, w, func(d int64) float64 { return math.Exp(-float64(d) / tau) }, tau*(1-math.Exp(-6)), false))
		case "activity":
			r.wins = append(r.wins, r.newWin(name, opt.Bin, opt.Bin, func(int64) float64 { return 1 }, float64(2*opt.Bin), false))
			r.ringLen = max(r.ringLen, opt.Bin)
		case "linking":
			r.link = newLinker()
		case "size":
			r.size = newSizer()
		default:
			return nil, fmt.Errorf("attack: unknown attack %q (have %v)", name, Names)
		}
	}
	return r, nil
}

func (r *Runner) addTarget(h, m string) {
	r.tByMbox[m] = append(r.tByMbox[m], len(r.targets))
	r.targets = append(r.targets, &tmeta{handle: h, mailbox: m})
}

// isReceive reports whether e is the server learning that a mailbox
// receives: a Send request names it on arrival.
func isReceive(e *Event) bool {
	return e.Ev == "request" && e.Kind == "Send" && e.Mailbox != ""
}

// Observe feeds one event; events must come in time order.
func (r *Runner) Observe(e *Event) {
	if !r.started {
		r.start, r.started = e.T, true
	}
	r.now = e.T
	if r.link != nil {
		r.link.observe(e)
	}
	if !isReceive(e) {
		return
	}
	if r.size != nil {
		r.size.observe(e)
	}
	t, m := e.T, e.Mailbox
	for _, w := range r.wins {
		w.expire(r, t)
		w.hit(t, m)
	}
	if r.ep != nil {
		r.ep.observe(r, t, m)
	}
	r.bg.add(m)
	if ix, ok := r.tByMbox[m]; ok {
		for _, i := range ix {
			for _, w := range r.wins {
				w.open(r, i, t)
			}
		}
	}
	if r.ringLen > 0 {
		r.ring = append(r.ring, sendRec{t, m})
		cut := 0
		for cut < len(r.ring) && r.ring[cut].t <= t-r.ringLen {
			cut++
		}
		if cut > len(r.ring)/2 {
			r.ring = append(r.ring[:0], r.ring[cut:]...)
		}
	}
}

// Results closes every open window and returns each attack's outcome.
func (r *Runner) Results() []Result {
	var out []Result
	for _, w := range r.wins {
		w.expire(r, math.MaxInt64)
		out = append(out, w.result(r))
	}
	if r.ep != nil {
		out = append(out, r.ep.result(r))
	}
	if r.link != nil {
		out = append(out, r.link.result(r))
	}
	if r.size != nil {
		out = append(out, r.size.result(r))
	}
	order := map[string]int{}
	for i, n := range Names {
		order[n] = i
	}
	sort.SliceStable(out, func(i, j int) bool { return order[out[i].Attack] < order[out[j].Attack] })
	return out
}

func (r *Runner) guess(m string, s float64) Guess {
	return Guess{Mailbox: m, Handle: r.byMbox[m], Score: s}
}

// rate is the attacker's estimate of how often m receives, per ns, from
// what it has seen so far.
func (r *Runner) rate(m string) float64 {
	el := r.now - r.start
	if el <= 0 {
		return 0
	}
	return float64(r.bg.get(m)) / float64(el)
}

// winAttack correlates a target's receives with every mailbox's receives
// in a window (t-before, t+after] around each of them.
type winAttack struct {
	name          string
	before, after int64
	weight        func(d int64) float64
	wint          float64 // ∫ weight over the window, ns
	sets          bool
	st            []*tstate
	active        []int // targets with open windows
}

type tstate struct {
	pending []int64
	seen    map[string]int64 // sets: 1 + the last window start that counted m
	k       int
	hits    map[string]float64
	steps   []Step
	last    string
	lastU   bool
}

func (r *Runner) newWin(name string, before, after int64, w func(int64) float64, wint float64, sets bool) *winAttack {
	a := &winAttack{name: name, before: before, after: after, weight: w, wint: wint, sets: sets}
	for range r.targets {
		a.st = append(a.st, &tstate{hits: map[string]float64{}, seen: map[string]int64{}})
	}
	return a
}

func (a *winAttack) open(r *Runner, i int, t int64) {
	s := a.st[i]
	if len(s.pending) == 0 {
		a.active = append(a.active, i)
	}
	s.pending = append(s.pending, t)
	if a.before > 0 {
		own := r.targets[i].mailbox
		for _, x := range r.ring {
			if x.t > t-a.before && x.t < t && x.mb != own {
				a.add(s, t, x.mb, t-x.t)
			}
		}
	}
}

func (a *winAttack) add(s *tstate, start int64, m string, d int64) {
	if a.sets {
		if s.seen[m] == start+1 { // +1: the zero value is no window
			return
		}
		s.seen[m] = start + 1
		s.hits[m]++
		return
	}
	s.hits[m] += a.weight(d)
}

func (a *winAttack) hit(t int64, m string) {
	for _, i := range a.active {
		s := a.st[i]
		for _, te := range s.pending {
			if t > te && t <= te+a.after {
				a.add(s, te, m, t-te)
			}
		}
	}
}

func (a *winAttack) expire(r *Runner, t int64) {
	keep := a.active[:0]
	for _, i := range a.active {
		s := a.st[i]
		n := 0
		for n < len(s.pending) && s.pending[n]+a.after < t {
			s.k++
			if evalAt(s.k) {
				a.eval(r, i, s.pending[n])
			}
			n++
		}
		s.pending = s.pending[n:]
		if len(s.pending) > 0 {
			keep = append(keep, i)
		} else if t == math.MaxInt64 && !evalAt(s.k) && s.k > 0 {
			a.eval(r, i, r.now)
		}
	}
	a.active = keep
}

// evalAt says after which target message counts the ranking is computed:
// every one up to 40, then every ~5 %.
func evalAt(k int) bool {
	if k <= 40 {
		return true
	}
	return k%max(1, k/20) == 0
}

// score is m's background-corrected score for target state s.
func (a *winAttack) score(r *Runner, s *tstate, m string, h float64) float64 {
	if a.sets {
		return h
	}
	return h - float64(s.k)*r.rate(m)*a.wint
}

func (a *winAttack) eval(r *Runner, i int, t int64) {
	s := a.st[i]
	own := r.targets[i].mailbox
	best, second := math.Inf(-1), math.Inf(-1)
	var top string
	set := 0
	for m, h := range s.hits {
		if m == own {
			continue
		}
		sc := a.score(r, s, m, h)
		if a.sets && int(h) >= s.k {
			set++
		}
		if sc > best || (sc == best && m < top) {
			second = best
			best, top = sc, m
		} else if sc > second {
			second = sc
		}
	}
	if top == "" {
		return
	}
	unique := best > second
	if top != s.last || unique != s.lastU || a.sets {
		st := Step{T: t, K: s.k, Top: r.guess(top, best), Unique: unique, Set: set}
		if a.sets && len(s.steps) > 0 {
			p := s.steps[len(s.steps)-1]
			if p.Top.Mailbox == top && p.Unique == unique && p.Set == set {
				return
			}
		}
		s.steps = append(s.steps, st)
		s.last, s.lastU = top, unique
	}
}

// record ranks s's raw scores and appends a step when the top guess (or
// its uniqueness) changed.
func (r *Runner) record(s *tstate, own string, t int64) {
	best, second := math.Inf(-1), math.Inf(-1)
	var top string
	for m, h := range s.hits {
		if m == own {
			continue
		}
		if h > best || (h == best && m < top) {
			second = best
			best, top = h, m
		} else if h > second {
			second = h
		}
	}
	if top == "" {
		return
	}
	unique := best > second
	if top != s.last || unique != s.lastU {
		s.steps = append(s.steps, Step{T: t, K: s.k, Top: r.guess(top, best), Unique: unique})
		s.last, s.lastU = top, unique
	}
}

func (a *winAttack) result(r *Runner) Result {
	res := Result{Attack: a.name}
	for i, tm := range r.targets {
		s := a.st[i]
		var gs []Guess
		for m, h := range s.hits {
			if m != tm.mailbox {
				gs = append(gs, r.guess(m, a.score(r, s, m, h)))
			}
		}
		res.Targets = append(res.Targets, finish(tm, s.k, s.steps, gs, r.opt.Top))
	}
	return res
}

// finish sorts guesses, keeps the top ones and computes the entropy of
// the belief over all of them.
func finish(tm *tmeta, k int, steps []Step, gs []Guess, top int) Target {
	slices.SortFunc(gs, func(x, y Guess) int {
		if x.Score != y.Score {
			if x.Score > y.Score {
				return -1
			}
			return 1
		}
		if x.Mailbox < y.Mailbox {
			return -1
		}
		return 1
	})
	var sum float64
	for _, g := range gs {
		if g.Score > 0 {
			sum += g.Score
		}
	}
	var h float64
	if sum > 0 {
		for _, g := range gs {
			if g.Score > 0 {
				p := g.Score / sum
				h -= p * math.Log2(p)
			}
		}
	}
	if len(gs) > top {
		gs = gs[:top]
	}
	if steps == nil {
		steps = []Step{}
	}
	return Target{Handle: tm.handle, Mailbox: tm.mailbox, K: k, Steps: steps, Final: gs, Entropy: h}
}

// cms is a count-min sketch of receives per mailbox: bounded memory at a
// million users (it over-counts by a little, never under).
// Its hashes are fixed (FNV-1a, then a per-row mix), so a run is
// reproducible.
type cms struct {
	row [cmsDepth][]uint32
}

const (
	cmsDepth = 4
	cmsWidth = 1 << 20
)

func newCMS() *cms {
	c := &cms{}
	for i := range c.row {
		c.row[i] = make([]uint32, cmsWidth)
	}
	return c
}

func (c *cms) add(m string) {
	h := fnv1a(m)
	for i := range c.row {
		c.row[i][mix(h, i)%cmsWidth]++
	}
}

func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finaliser over h and the row.
func mix(h uint64, row int) uint64 {
	z := h + uint64(row+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (c *cms) get(m string) uint32 {
	h := fnv1a(m)
	v := uint32(math.MaxUint32)
	for i := range c.row {
		v = min(v, c.row[i][mix(h, i)%cmsWidth])
	}
	return v
}
