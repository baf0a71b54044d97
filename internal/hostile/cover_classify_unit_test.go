package hostile_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/wire"
)

// synthView is a server view of n sends at 10/s over four connections to
// six mailboxes, with 55 % dummies; a dummy's record is one bucket larger
// with probability leak, and nothing else tells them apart.
func synthView(seed uint64, n int, leak float64) (*serverView, time.Time) {
	r := rand.New(rand.NewPCG(seed, 2))
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	v := &serverView{
		mailboxes: map[wire.ID]mailboxObs{}, otherReqs: map[uint64]bool{},
		delivered: map[wire.MessageID]time.Time{}, acked: map[wire.MessageID]time.Time{},
		ackTag: map[wire.MessageID]string{}, sendsByTag: map[string][]time.Time{},
	}
	dests := make([]wire.ID, 6)
	for i := range dests {
		dests[i][0] = byte(i + 1)
	}
	truth := map[wire.MessageID]bool{}
	at := start
	for i := range n {
		at = at.Add(time.Duration(r.ExpFloat64() * float64(100*time.Millisecond)))
		cover := r.Float64() < 0.55
		size := 2048
		if cover && r.Float64() < leak {
			size = 4096
		}
		var id wire.MessageID
		id[0], id[1], id[2] = byte(i), byte(i>>8), 0xc0
		v.sends = append(v.sends, sendObs{at: at, conn: uint64(1 + i%4), tag: fmt.Sprint(i % 4), dest: dests[r.IntN(len(dests))], id: id, size: size, cover: cover})
		truth[id] = cover
	}
	v.truth = func(id wire.MessageID) (bool, bool) { c, ok := truth[id]; return c, ok }
	return v, start
}

// TestCoverClassifierFindsALeak checks the attack of
// TestHostileCoverClassifier itself: on a view where 40 % of the dummies
// are one bucket larger (best possible accuracy 0.70) cross-validation
// picks the record size and scores near that; on a view without a
// difference it stays near chance.
func TestCoverClassifierFindsALeak(t *testing.T) {
	v, start := synthView(1, 1200, 0.4)
	rep := classify(v, start, 1)
	t.Logf("leaky view: %s: cv %.3f, test %.3f [%.3f, %.3f]", rep.best.name, rep.cvAcc, rep.acc, rep.lo, rep.hi)
	if rep.acc < 0.62 || !strings.Contains(rep.best.name, "record size") {
		t.Errorf("the attack missed a size leak worth 0.70: %s scored %.3f\n%s", rep.best.name, rep.acc, rep)
	}
	v, start = synthView(2, 1200, 0)
	rep = classify(v, start, 1)
	t.Logf("clean view: %s: cv %.3f, test %.3f [%.3f, %.3f]", rep.best.name, rep.cvAcc, rep.acc, rep.lo, rep.hi)
	if rep.acc > 0.55 {
		t.Errorf("the attack found a leak in a view without one: %s scored %.3f\n%s", rep.best.name, rep.acc, rep)
	}
}
