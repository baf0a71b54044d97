package hostile_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/internal/stats"
	"github.com/quicprochat/qpc/wire"
)

// The server's classifier of cover traffic. Everything here reads only
// what the server saw (hostile.Server.Events: every record of every
// connection, with its time, connection, listener tag and size); the
// labels come from the clients and are used only to train and to score.

// sendObs is one Send as the server saw it.
type sendObs struct {
	at    time.Time
	conn  uint64
	tag   string
	dest  wire.ID
	id    wire.MessageID
	size  int
	cover bool // ground truth, from the sending client
}

// mailboxObs is how a mailbox came to be, as the server saw it.
type mailboxObs struct {
	conn uint64
	tag  string
}

// serverView is what the classifier works from.
type serverView struct {
	sends      []sendObs                         // every Send, in time order
	mailboxes  map[wire.ID]mailboxObs            // by send ID
	otherReqs  map[uint64]bool                   // connections that made a request other than Send
	delivered  map[wire.MessageID]time.Time      // first Delivery of a message ID
	acked      map[wire.MessageID]time.Time      // Ack of a message ID
	ackTag     map[wire.MessageID]string         // the tag of the connection that acked it
	sendsByTag map[string][]time.Time            // times of every Send, by tag
	truth      func(wire.MessageID) (bool, bool) // ground truth, for labelling only
}

// buildView turns the server's events into the view. Sends whose message
// ID the clients did not report (before the measurement, or failed) are
// kept as history but not labelled.
func buildView(events []hostile.Event, truth func(wire.MessageID) (bool, bool)) *serverView {
	v := &serverView{
		mailboxes: map[wire.ID]mailboxObs{}, otherReqs: map[uint64]bool{},
		delivered: map[wire.MessageID]time.Time{}, acked: map[wire.MessageID]time.Time{},
		ackTag: map[wire.MessageID]string{}, sendsByTag: map[string][]time.Time{}, truth: truth,
	}
	type streamKey struct {
		conn   uint64
		stream int
	}
	creating := map[streamKey]bool{}
	for _, e := range events {
		k := streamKey{e.Conn, e.Stream}
		switch m := e.Message.(type) {
		case *wire.Send:
			if e.FromClient {
				v.sends = append(v.sends, sendObs{at: e.Time, conn: e.Conn, tag: e.Tag, dest: m.SendID, id: m.MessageID, size: e.Size})
				v.sendsByTag[e.Tag] = append(v.sendsByTag[e.Tag], e.Time)
			}
		case *wire.CreateMailbox:
			creating[k] = true
			v.otherReqs[e.Conn] = true
		case *wire.MailboxCreated:
			if creating[k] {
				v.mailboxes[m.SendID] = mailboxObs{conn: e.Conn, tag: e.Tag}
			}
		case *wire.Delivery:
			if _, ok := v.delivered[m.MessageID]; !ok {
				v.delivered[m.MessageID] = e.Time
			}
		case *wire.Ack:
			v.otherReqs[e.Conn] = true
			for _, id := range m.MessageIDs {
				if _, ok := v.acked[id]; !ok {
					v.acked[id] = e.Time
					v.ackTag[id] = e.Tag
				}
			}
		case *wire.ClientHello:
		default:
			if e.FromClient {
				v.otherReqs[e.Conn] = true
			}
		}
	}
	sort.SliceStable(v.sends, func(i, j int) bool { return v.sends[i].at.Before(v.sends[j].at) })
	for i := range v.sends {
		if c, ok := truth(v.sends[i].id); ok {
			v.sends[i].cover = c
		}
	}
	return v
}

// featureNames name the columns of features(). The last two are filled
// from the training labels (trainTables).
var featureNames = []string{
	"mailbox created on the sending connection",
	"mailbox created by the sender's tag",
	"sending connection makes other requests",
	"log gap since previous send on the connection",
	"log gap to next send on the connection",
	"record size",
	"log sends to the mailbox before",
	"share of the tag's earlier sends to this mailbox",
	"same mailbox as previous send on the connection",
	"previous mailbox was followed by this one before (burst affinity)",
	"previous send on the connection within 50 ms (burst)",
	"log delay send to delivery",
	"log delay send to ack",
	"log delay delivery to ack",
	"acked at all",
	"log gap from ack to the acker's next send",
	"real share of the mailbox in training",
	"real share of (tag, mailbox) in training",
}

const (
	fDestReal    = 16
	fTagDestReal = 17
)

func logSec(d time.Duration) float64 { return math.Log(1e-4 + max(d.Seconds(), 0)) }

// features computes the server-side feature vector of every send; the two
// label-derived columns are left 0.
func (v *serverView) features() [][]float64 {
	const never = time.Minute
	out := make([][]float64, len(v.sends))
	prevOnConn := map[uint64]int{}
	destCount := map[wire.ID]int{}
	tagCount := map[string]int{}
	tagDest := map[string]map[wire.ID]int{}
	follows := map[[2]wire.ID]int{} // consecutive (previous, this) on a connection
	fromCount := map[wire.ID]int{}
	// next send on the same connection
	next := make([]int, len(v.sends))
	last := map[uint64]int{}
	for i := len(v.sends) - 1; i >= 0; i-- {
		next[i] = -1
		if j, ok := last[v.sends[i].conn]; ok {
			next[i] = j
		}
		last[v.sends[i].conn] = i
	}
	for i, s := range v.sends {
		f := make([]float64, len(featureNames))
		mb, known := v.mailboxes[s.dest]
		if known && mb.conn == s.conn {
			f[0] = 1
		}
		if known && mb.tag == s.tag {
			f[1] = 1
		}
		if v.otherReqs[s.conn] {
			f[2] = 1
		}
		p, hasPrev := prevOnConn[s.conn]
		f[3] = logSec(never)
		if hasPrev {
			f[3] = logSec(s.at.Sub(v.sends[p].at))
		}
		f[4] = logSec(never)
		if next[i] >= 0 {
			f[4] = logSec(v.sends[next[i]].at.Sub(s.at))
		}
		f[5] = float64(s.size)
		f[6] = math.Log1p(float64(destCount[s.dest]))
		if n := tagCount[s.tag]; n > 0 {
			f[7] = float64(tagDest[s.tag][s.dest]) / float64(n)
		}
		if hasPrev && v.sends[p].dest == s.dest {
			f[8] = 1
		}
		if hasPrev {
			pd := v.sends[p].dest
			if n := fromCount[pd]; n > 0 {
				f[9] = float64(follows[[2]wire.ID{pd, s.dest}]) / float64(n)
			}
			if s.at.Sub(v.sends[p].at) < 50*time.Millisecond {
				f[10] = 1
			}
		}
		dl, okD := v.delivered[s.id]
		ak, okA := v.acked[s.id]
		f[11], f[12], f[13] = logSec(never), logSec(never), logSec(never)
		if okD {
			f[11] = logSec(dl.Sub(s.at))
		}
		if okA {
			f[12] = logSec(ak.Sub(s.at))
			f[14] = 1
			if okD {
				f[13] = logSec(ak.Sub(dl))
			}
			f[15] = logSec(never)
			times := v.sendsByTag[v.ackTag[s.id]]
			if k, _ := slices.BinarySearchFunc(times, ak, func(a, b time.Time) int { return a.Compare(b) }); k < len(times) {
				f[15] = logSec(times[k].Sub(ak))
			}
		}
		out[i] = f
		// history after this send
		if hasPrev {
			pd := v.sends[p].dest
			follows[[2]wire.ID{pd, s.dest}]++
			fromCount[pd]++
		}
		prevOnConn[s.conn] = i
		destCount[s.dest]++
		tagCount[s.tag]++
		if tagDest[s.tag] == nil {
			tagDest[s.tag] = map[wire.ID]int{}
		}
		tagDest[s.tag][s.dest]++
	}
	return out
}

// sample is one labelled send.
type sample struct {
	x     []float64
	cover bool
	s     *sendObs
}

// fillTables sets the label-derived columns: the real share of the
// destination (and of tag and destination) among the training samples,
// Laplace-smoothed, leaving a training sample's own label out.
func fillTables(train, test []sample) {
	type cnt struct{ real, all float64 }
	dest := map[wire.ID]*cnt{}
	pair := map[string]*cnt{}
	key := func(s *sendObs) string { return s.tag + "/" + string(s.dest[:]) }
	for _, x := range train {
		for _, c := range []*cnt{get(dest, x.s.dest), get(pair, key(x.s))} {
			c.all++
			if !x.cover {
				c.real++
			}
		}
	}
	share := func(c *cnt, own bool, isReal bool) float64 {
		r, a := c.real, c.all
		if own {
			a--
			if isReal {
				r--
			}
		}
		return (r + 1) / (a + 2)
	}
	for _, x := range train {
		x.x[fDestReal] = share(get(dest, x.s.dest), true, !x.cover)
		x.x[fTagDestReal] = share(get(pair, key(x.s)), true, !x.cover)
	}
	for _, x := range test {
		x.x[fDestReal] = share(get(dest, x.s.dest), false, false)
		x.x[fTagDestReal] = share(get(pair, key(x.s)), false, false)
	}
}

func get[K comparable, V any](m map[K]*V, k K) *V {
	if v, ok := m[k]; ok {
		return v
	}
	v := new(V)
	m[k] = v
	return v
}

// balance keeps as many real sends as dummies, dropping at random from
// the larger class, so that chance is 0.5.
func balance(r *rand.Rand, xs []sample) []sample {
	var real, cover []sample
	for _, x := range xs {
		if x.cover {
			cover = append(cover, x)
		} else {
			real = append(real, x)
		}
	}
	n := min(len(real), len(cover))
	r.Shuffle(len(real), func(i, j int) { real[i], real[j] = real[j], real[i] })
	r.Shuffle(len(cover), func(i, j int) { cover[i], cover[j] = cover[j], cover[i] })
	out := append(real[:n:n], cover[:n]...)
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// classifier says "dummy" (true) or "real" (false) for a feature vector.
type classifier struct {
	name    string
	predict func(x []float64) bool
}

func accuracy(c classifier, xs []sample) (correct int) {
	for _, x := range xs {
		if c.predict(x.x) == x.cover {
			correct++
		}
	}
	return correct
}

// stump is the best one-feature threshold rule on feature f.
func stump(train []sample, f int) classifier {
	vals := make([]float64, 0, len(train))
	for _, x := range train {
		vals = append(vals, x.x[f])
	}
	slices.Sort(vals)
	vals = slices.Compact(vals)
	cands := vals
	if len(cands) > 200 { // thresholds at quantiles
		cands = nil
		for q := range 200 {
			cands = append(cands, vals[q*len(vals)/200])
		}
	}
	best, thr, above := -1, 0.0, false
	for _, t := range cands {
		for _, a := range []bool{true, false} {
			c := 0
			for _, x := range train {
				if (x.x[f] >= t) == a == x.cover {
					c++
				}
			}
			if c > best {
				best, thr, above = c, t, a
			}
		}
	}
	dir := ">="
	if !above {
		dir = "<"
	}
	return classifier{
		name:    fmt.Sprintf("stump: dummy iff %s %s %.4g", featureNames[f], dir, thr),
		predict: func(x []float64) bool { return (x[f] >= thr) == above },
	}
}

// naiveBayes bins each feature at the training quantiles and multiplies
// the per-bin likelihoods (Laplace-smoothed).
func naiveBayes(train []sample, bins int) classifier {
	nf := len(featureNames)
	edges := make([][]float64, nf)
	for f := range nf {
		vals := make([]float64, 0, len(train))
		for _, x := range train {
			vals = append(vals, x.x[f])
		}
		slices.Sort(vals)
		for b := 1; b < bins; b++ {
			edges[f] = append(edges[f], vals[b*len(vals)/bins])
		}
		edges[f] = slices.Compact(edges[f])
	}
	bin := func(f int, v float64) int {
		k, _ := slices.BinarySearch(edges[f], v)
		return k
	}
	counts := [2][][]float64{}
	var prior [2]float64
	for c := range 2 {
		counts[c] = make([][]float64, nf)
		for f := range nf {
			counts[c][f] = make([]float64, len(edges[f])+2)
		}
	}
	for _, x := range train {
		c := 0
		if x.cover {
			c = 1
		}
		prior[c]++
		for f := range nf {
			counts[c][f][bin(f, x.x[f])]++
		}
	}
	return classifier{name: fmt.Sprintf("naive Bayes, %d quantile bins per feature", bins), predict: func(x []float64) bool {
		var ll [2]float64
		for c := range 2 {
			ll[c] = math.Log(prior[c] + 1)
			for f := range nf {
				k := len(counts[c][f])
				ll[c] += math.Log((counts[c][f][bin(f, x[f])] + 1) / (prior[c] + float64(k)))
			}
		}
		return ll[1] > ll[0]
	}}
}

// logistic is L2-regularised logistic regression on standardised
// features, by gradient descent.
func logistic(train []sample) classifier {
	nf := len(featureNames)
	mean, sd := make([]float64, nf), make([]float64, nf)
	for _, x := range train {
		for f := range nf {
			mean[f] += x.x[f]
		}
	}
	n := float64(len(train))
	for f := range nf {
		mean[f] /= n
	}
	for _, x := range train {
		for f := range nf {
			d := x.x[f] - mean[f]
			sd[f] += d * d
		}
	}
	for f := range nf {
		sd[f] = math.Sqrt(sd[f] / n)
		if sd[f] == 0 {
			sd[f] = 1
		}
	}
	z := func(x []float64) []float64 {
		out := make([]float64, nf)
		for f := range nf {
			out[f] = (x[f] - mean[f]) / sd[f]
		}
		return out
	}
	w := make([]float64, nf+1)
	zs := make([][]float64, len(train))
	for i, x := range train {
		zs[i] = z(x.x)
	}
	score := func(v []float64) float64 {
		s := w[nf]
		for f := range nf {
			s += w[f] * v[f]
		}
		return s
	}
	for range 400 {
		g := make([]float64, nf+1)
		for i, x := range train {
			y := 0.0
			if x.cover {
				y = 1
			}
			p := 1 / (1 + math.Exp(-score(zs[i])))
			for f := range nf {
				g[f] += (p - y) * zs[i][f]
			}
			g[nf] += p - y
		}
		for f := range nf + 1 {
			reg := 0.0
			if f < nf {
				reg = 1e-3 * w[f]
			}
			w[f] -= 0.5 * (g[f]/n + reg)
		}
	}
	return classifier{name: "logistic regression on all features", predict: func(x []float64) bool { return score(z(x)) > 0 }}
}

// trainer is one family of classifier the attacker may pick: how to fit
// it to a training set.
type trainer struct {
	name string
	fit  func([]sample) classifier
}

// trainers are every candidate: a stump per feature, naive Bayes with 4
// and 8 bins, logistic regression, and the trivial rule.
func trainers() []trainer {
	var ts []trainer
	for f := range featureNames {
		ts = append(ts, trainer{"stump on " + featureNames[f], func(xs []sample) classifier { return stump(xs, f) }})
	}
	for _, bins := range []int{4, 8} {
		ts = append(ts, trainer{fmt.Sprintf("naive Bayes, %d bins", bins), func(xs []sample) classifier { return naiveBayes(xs, bins) }})
	}
	ts = append(ts, trainer{"logistic regression", logistic},
		trainer{"trivial rule", func([]sample) classifier { return trivialRule }})
	return ts
}

// cvFolds is how many folds the attacker cross-validates on.
const cvFolds = 5

// crossValidate scores every trainer by k-fold cross-validation on train
// (balanced): each class is cut, in time order, into cvFolds contiguous
// runs, and fold k is the k-th run of both, so that every fold is
// balanced like the test half and a burst's envelopes and their
// neighbours mostly fall in one fold. Each fold is held out in turn, the
// label-derived columns are recomputed from the other folds alone, and the
// result is the share of held-out samples classified right.
func crossValidate(ts []trainer, train []sample) []float64 {
	var classes [2][]sample
	for _, x := range train {
		c := 0
		if x.cover {
			c = 1
		}
		classes[c] = append(classes[c], x)
	}
	for _, xs := range classes {
		sort.SliceStable(xs, func(i, j int) bool { return xs[i].s.at.Before(xs[j].s.at) })
	}
	correct := make([]int, len(ts))
	for k := range cvFolds {
		var in, out []sample
		for _, xs := range classes {
			lo, hi := k*len(xs)/cvFolds, (k+1)*len(xs)/cvFolds
			for i, x := range xs {
				x.x = slices.Clone(x.x)
				if i >= lo && i < hi {
					out = append(out, x)
				} else {
					in = append(in, x)
				}
			}
		}
		fillTables(in, out)
		for i, t := range ts {
			correct[i] += accuracy(t.fit(in), out)
		}
	}
	acc := make([]float64, len(ts))
	for i := range ts {
		acc[i] = float64(correct[i]) / float64(len(train))
	}
	return acc
}

// trivialRule is today's attack: a send to a mailbox created on the same
// connection is a dummy.
var trivialRule = classifier{name: "rule: dummy iff the mailbox was created on the sending connection",
	predict: func(x []float64) bool { return x[0] == 1 }}

// classifierReport is the outcome of one classification run.
type classifierReport struct {
	train, test   int
	best          classifier
	cvAcc         float64 // the selected one's cross-validated accuracy on training
	trainAcc      float64 // and its accuracy on the whole training half
	correct       int     // of the best, on the test half
	acc, lo, hi   float64 // its test accuracy and Wilson 95 % interval
	trivial       float64 // the trivial rule's accuracy on the test half
	lines         []string
	realFraction  float64
	labelledSends int
}

func (r classifierReport) String() string {
	return strings.Join(r.lines, "\n")
}

// classify labels the sends after start and splits them in time: the
// first half is the attacker's training data, the second the test, both
// balanced. The attacker picks its classifier as a real one would, by
// cvFolds-fold cross-validation on the training half, fits it on the whole
// half and runs it on the test half: that test accuracy is the result.
// Every candidate's cross-validated, training and test accuracy is
// reported.
func classify(v *serverView, start time.Time, seed uint64) classifierReport {
	feats := v.features()
	var xs []sample
	covers := 0
	for i := range v.sends {
		s := &v.sends[i]
		if _, ok := v.truth(s.id); !ok || s.at.Before(start) {
			continue
		}
		xs = append(xs, sample{x: feats[i], cover: s.cover, s: s})
		if s.cover {
			covers++
		}
	}
	rep := classifierReport{labelledSends: len(xs)}
	if len(xs) == 0 {
		return rep
	}
	rep.realFraction = 1 - float64(covers)/float64(len(xs))
	train, test := xs[:len(xs)/2], xs[len(xs)/2:]
	r := rand.New(rand.NewPCG(seed, 1))
	train, test = balance(r, train), balance(r, test)
	rep.train, rep.test = len(train), len(test)
	if len(train) < 2*cvFolds || len(test) == 0 {
		return rep
	}
	ts := trainers()
	cv := crossValidate(ts, train)
	fillTables(train, test)
	best := -1
	for i, t := range ts {
		c := t.fit(train)
		tr, te := accuracy(c, train), accuracy(c, test)
		rep.lines = append(rep.lines, fmt.Sprintf("  cv %.3f  train %.3f  test %.3f  %s",
			cv[i], float64(tr)/float64(len(train)), float64(te)/float64(len(test)), c.name))
		if best < 0 || cv[i] > cv[best] {
			best, rep.best, rep.correct = i, c, te
			rep.trainAcc = float64(tr) / float64(len(train))
		}
		if c.name == trivialRule.name {
			rep.trivial = float64(te) / float64(len(test))
		}
	}
	rep.cvAcc = cv[best]
	rep.acc = float64(rep.correct) / float64(len(test))
	rep.lo, rep.hi = stats.Wilson(rep.correct, len(test), stats.Z95)
	return rep
}
