package trace

import (
	"fmt"

	"github.com/quicprochat/qpc/lab/scenario"
)

// FromScenario is the trace model of scenario sc (lab/scenario): the
// population, its background traffic, receipts, cover traffic, mailboxes
// and the traffic keys ([traffic]: stray receipts, correlated background)
// come from the file, so that the trace and a live run of one scenario
// model the same traffic. Every scenario user is background: Users is
// the scenario's users, Contacts its graph.contacts (the random pairings
// of the model), RatePerDay its timing.rate_per_day. What the scenario
// does not say is the model's own: the targets (Hot, HotInterval: the
// caller's), the token epoch and the server's latency (Generate's
// defaults).
//
// The model has no groups, popular accounts, bursts, diurnal profile or
// text sizes (it draws buckets by its own profile, see bucket); a
// scenario that sets groups, popular accounts, bursts or a diurnal
// profile is refused rather than modelled as another experiment. Timing
// replies need an exponential delay.
func FromScenario(sc *scenario.Scenario, seed uint64) (Params, error) {
	bad := func(key string) (Params, error) {
		return Params{}, fmt.Errorf("trace: scenario %s: %s: the trace model does not have it", sc.Name, key)
	}
	switch t := sc.Timing; {
	case sc.Graph.Groups > 0:
		return bad("graph.groups")
	case sc.Graph.Popular > 0:
		return bad("graph.popular")
	case t.BurstProb > 0:
		return bad("timing.burst_prob")
	case len(t.Diurnal) > 0:
		return bad("timing.diurnal")
	case t.ReplyProb > 0 && t.ReplyDelay.Dist != "exp":
		return bad("timing.reply_delay (not exp)")
	}
	p := Params{
		Name: sc.Name, Seed: seed, Users: sc.Users, Duration: int64(sc.Duration.Duration),
		Contacts: sc.Graph.Contacts, RatePerDay: sc.Timing.RatePerDay,
		PerConvMailboxes: sc.PerConversation(),
		Receipts:         ReceiptsOff,
		CoverRate:        sc.Cover.RatePerDay / 86400,
		StrayReceipts:    sc.Traffic.StrayReceipts,
		BgReplies:        sc.Traffic.Replies,
		BgRepeats:        sc.Traffic.Repeats,
	}
	if sc.Timing.ReplyProb > 0 {
		p.ReplyProb, p.ReplyMean = sc.Timing.ReplyProb, int64(sc.Timing.ReplyDelay.Mean.Duration)
	}
	if r := sc.Receipts; r.Enabled {
		switch r.Delay.Dist {
		case "fixed":
			p.Receipts, p.ReceiptDelay = ReceiptsAtOnce, int64(r.Delay.Mean.Duration)
		default: // exp, the client's distribution (Validate allows no other)
			p.Receipts, p.ReceiptMean, p.ReceiptMax = ReceiptsJitter, int64(r.Delay.Mean.Duration), int64(r.Delay.Max.Duration)
			if p.ReceiptMax == 0 {
				p.ReceiptMax = 10 * p.ReceiptMean // the client's cap when none is set
			}
		}
	}
	return p, nil
}

// LabTraffic is p with the lab's own traffic instead of the scenario's
// [traffic]: every receipt reaches the text's writer, the background is
// independent (Poisson).
func LabTraffic(p Params) Params {
	p.StrayReceipts, p.BgReplies, p.BgRepeats = 0, 0, 0
	return p
}
