package attack

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// epochRecord is a hand-built record for sda-epoch (1-s epochs, span 2):
// "e0" receives 0.1 s into every epoch (background present everywhere);
// alice's a1 receives at 10.0 s, at 20.7 s and 20.9 s (one target epoch,
// 20) and at 30.0 s; bob's b1 receives each one's receipt 0.5 s later
// (10.5, 21.2, 21.4, 30.5: epochs 10, 21, 21, 30); c1 receives at 20.3 s,
// in target epoch 20 but before alice's receive; d1 receives at 22.5 s, in
// no target window (20-21).
func epochRecord() string {
	type ev struct {
		t  int64
		mb string
	}
	ms := second / 1000
	var evs []ev
	for s := range int64(41) {
		evs = append(evs, ev{s*second + 100*ms, "e0"})
	}
	for _, t := range []int64{10000, 20700, 20900, 30000} {
		evs = append(evs, ev{t * ms, "a1"}, ev{(t + 500) * ms, "b1"})
	}
	evs = append(evs, ev{20300 * ms, "c1"}, ev{22500 * ms, "d1"})
	slices.SortStableFunc(evs, func(x, y ev) int { return int(x.t - y.t) })
	var b strings.Builder
	b.WriteString(`{"v":1,"schema":"qpc-observer","start":"2026-12-07T00:00:00Z"}` + "\n")
	for _, e := range evs {
		fmt.Fprintf(&b, `{"t":%d,"conn":"cx","ev":"request","kind":"Send","mailbox":"%s","bucket":512,"epoch":1}`+"\n", e.t, e.mb)
	}
	return b.String()
}

func TestLabEpochSDAKnownAnswer(t *testing.T) {
	ids := map[string]string{"alice": "a1", "bob": "b1", "carol": "c1", "dave": "d1"}
	opt := Options{Identities: ids, Targets: []string{"alice"}, Attacks: []string{"sda", "sda-epoch"}, Seed: 3}
	res := runHand(t, epochRecord(), opt)
	if len(res) != 2 || res[0].Attack != "sda" || res[1].Attack != "sda-epoch" {
		t.Fatalf("results %+v, want sda then sda-epoch", res)
	}
	anchored, ep := res[0].Targets[0], res[1].Targets[0]
	score := func(tg Target) map[string]float64 {
		m := map[string]float64{}
		for _, g := range tg.Final {
			m[g.Mailbox] = g.Score
		}
		return m
	}
	// Four receives, but three target epochs: 20.7 and 20.9 share one.
	if anchored.K != 4 || ep.K != 3 {
		t.Errorf("target messages: sda %d (want 4), sda-epoch %d (want 3)", anchored.K, ep.K)
	}
	es := score(ep)
	// b1: once per target epoch, never in a background range (those keep
	// off target windows): 3. c1: counted, as the whole of epoch 20 is
	// (the delivery-anchored window opens at 20.7 and misses it): 1. e0:
	// +1 per window, -1 per background range: 0, so not ranked. d1: never
	// in a window, subtracted at most once.
	if es["b1"] != 3 || es["c1"] != 1 {
		t.Errorf("sda-epoch scores %v, want b1 3, c1 1", es)
	}
	if _, ok := es["e0"]; ok {
		t.Errorf("sda-epoch scores %v: e0 is in every epoch and must cancel to 0", es)
	}
	if d, ok := es["d1"]; ok && d != -1 {
		t.Errorf("sda-epoch: d1 scored %v, want 0 or -1", d)
	}
	if ep.Final[0].Mailbox != "b1" || ep.Final[0].Handle != "bob" {
		t.Errorf("sda-epoch: top guess %+v, want bob", ep.Final[0])
	}
	if _, ok := score(anchored)["c1"]; ok {
		t.Errorf("sda: c1 received before alice and must not count: %+v", anchored.Final)
	}
	// After the first target epoch: b1 +1, e0 +1 -1: bob uniquely first,
	// the step dated at the end of epoch 10.
	if len(ep.Steps) == 0 || !ep.Steps[0].Unique || ep.Steps[0].Top.Mailbox != "b1" || ep.Steps[0].K != 1 || ep.Steps[0].T != 11*second-1 {
		t.Errorf("sda-epoch steps %+v, want bob unique at k=1, t=11s-1ns", ep.Steps)
	}
	// The background draw is seeded: the same seed, the same result.
	again := runHand(t, epochRecord(), opt)
	if !reflect.DeepEqual(again[1], res[1]) {
		t.Errorf("sda-epoch differs between runs with one seed:\n%+v\n%+v", res[1], again[1])
	}
}
