// Package score compares the attacks' guesses (lab/attack) with the
// ground truth of a run: messages until the true partner ranks first, its
// CDF over targets, precision and recall of recovered contacts, the true-
// positive rate at a fixed false-positive rate, and anonymity-set
// entropy. It is the only lab package that reads the truth; call Score
// with a Result and a Truth.
package score

import (
	"math"
	"slices"

	"github.com/quicprochat/qpc/lab/attack"
)

// Truth is what scoring needs from the ground truth.
type Truth interface {
	// Owner is the handle of the user who reads mailbox m.
	Owner(m string) (string, bool)
	// Contact reports whether two handles share a conversation.
	Contact(a, b string) bool
	// Received is when handle h was delivered a text (not a receipt or a
	// dummy), sorted.
	Received(h string) []int64
}

// Level says what counts as a link.
type Level string

const (
	// Identity: the top guess names (through an intro mailbox, public in
	// key transparency) a contact of the target: who talks to whom.
	Identity Level = "identity"
	// Mailbox: the top guess is a mailbox a contact reads, named or not.
	Mailbox Level = "mailbox"
)

// FPR is the false-positive rate at which TPR is reported.
const FPR = 0.01

// Summary is one attack's score at one level.
type Summary struct {
	Attack  string `json:"attack"`
	Level   Level  `json:"level"`
	Targets int    `json:"targets"`
	Linked  int    `json:"linked"`
	// ToLink is, per target, the texts the target had received when the
	// top guess first was a contact (unique); +Inf when never. Sorted: its
	// empirical CDF is the CDF over targets.
	ToLink []float64 `json:"-"`
	// Median of ToLink (+Inf when half the targets were never linked).
	Median float64 `json:"median"`
	// Messages is the median number of texts a target received in the run
	// (what "never within the run" means).
	Messages  float64 `json:"messages"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	TPR       float64 `json:"tpr_at_fpr"`
	Entropy   float64 `json:"entropy_bits"`
}

// Score scores one attack's result.
func Score(r attack.Result, tr Truth, level Level) Summary {
	s := Summary{Attack: r.Attack, Level: level, Targets: len(r.Targets)}
	var msgs []float64
	var pos, neg []float64
	var tp, fp, contacts int
	for _, t := range r.Targets {
		who := t.Handle
		if who == "" {
			who, _ = tr.Owner(t.Mailbox)
		}
		recv := tr.Received(who)
		msgs = append(msgs, float64(len(recv)))
		hit := func(g attack.Guess) bool {
			h := g.Handle
			if level == Mailbox {
				h, _ = tr.Owner(g.Mailbox)
			}
			return h != "" && tr.Contact(who, h)
		}
		to := math.Inf(1)
		for _, st := range t.Steps {
			if st.Unique && hit(st.Top) {
				to = float64(countUpTo(recv, st.T))
				s.Linked++
				break
			}
		}
		s.ToLink = append(s.ToLink, to)
		// Recovered contacts: final guesses scoring at least half the top.
		seen := map[string]bool{}
		for i, g := range t.Final {
			ok := hit(g)
			if ok {
				pos = append(pos, g.Score)
			} else {
				neg = append(neg, g.Score)
			}
			if g.Score <= 0 || g.Score < t.Final[0].Score/2 || i >= 5 {
				continue
			}
			if ok {
				k := g.Handle + "/" + g.Mailbox
				if !seen[k] {
					tp++
					seen[k] = true
				}
			} else {
				fp++
			}
		}
		contacts++ // each target has at least its hot partner; recall is per target's top partner
		s.Entropy += t.Entropy
	}
	slices.Sort(s.ToLink)
	s.Median = median(s.ToLink)
	slices.Sort(msgs)
	s.Messages = median(msgs)
	if tp+fp > 0 {
		s.Precision = float64(tp) / float64(tp+fp)
	}
	if contacts > 0 {
		s.Recall = math.Min(1, float64(tp)/float64(contacts))
		s.Entropy /= float64(len(r.Targets))
	}
	s.TPR = tprAt(pos, neg, s.Targets, FPR)
	return s
}

func countUpTo(ts []int64, t int64) int {
	n, _ := slices.BinarySearch(ts, t+1)
	return n
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	return x[(len(x)-1)/2]
}

// tprAt is the fraction of targets' true contacts scored above the
// threshold that lets through at most fpr of the non-contacts scored
// (a target's unscored contacts count as missed; nTargets true
// contacts at least).
func tprAt(pos, neg []float64, nTargets int, fpr float64) float64 {
	if nTargets == 0 {
		return 0
	}
	slices.Sort(neg)
	thr := math.Inf(-1)
	if len(neg) > 0 {
		i := int(math.Ceil(float64(len(neg)) * (1 - fpr)))
		if i >= len(neg) {
			thr = neg[len(neg)-1]
		} else {
			thr = neg[max(i-1, 0)]
		}
	}
	n := 0
	for _, p := range pos {
		if p > thr {
			n++
		}
	}
	return math.Min(1, float64(n)/float64(max(nTargets, len(pos))))
}

// CDF is the fraction of targets linked after at most x texts, at each x.
func CDF(toLink []float64, xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		n := 0
		for _, v := range toLink {
			if v <= x {
				n++
			}
		}
		if len(toLink) > 0 {
			out[i] = float64(n) / float64(len(toLink))
		}
	}
	return out
}
