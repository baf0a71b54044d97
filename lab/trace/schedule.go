package trace

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/quicprochat/qpc/lab/attack"
	"github.com/quicprochat/qpc/lab/attack/score"
	"github.com/quicprochat/qpc/lab/scenario"
)

// ScheduleOptions say how FromSchedule turns a scenario's schedule into
// the record a live run of it would give.
type ScheduleOptions struct {
	// Speed is the live run's time compression: a message scheduled at
	// simulated time At reaches the server at At/Speed (default 1: the
	// schedule's own time, as at Martiny et al.'s scale).
	Speed float64
	// Latency is the server's store-and-push delay, from a Send to its
	// delivery (default 2 ms).
	Latency time.Duration
	// ReceiptLags, when set, are the times from a text's Send to its
	// receipt's Send as a live run measured them (the client's receipt
	// delay, compressed, plus what the machine takes to deliver, decrypt
	// and answer); each receipt draws one uniformly. Unset, a receipt
	// follows after the scenario's receipt delay over Speed plus Latency:
	// a machine that takes no time.
	ReceiptLags []time.Duration
	// Seed seeds the draws (receipt delays) and the mailbox IDs; the
	// stray receipts are the schedule's own (scenario.Strays).
	Seed uint64
}

// FromSchedule writes, through emit and in time order, the observer
// record of the schedule s of scenario sc played live: every text is a
// Send to each recipient's mailbox in its conversation (the intro mailbox
// when the scenario does not use per-conversation mailboxes), delivered
// and acked on the recipient's connection; a receipt (direct chats, when
// the scenario has them) is a Send back to the writer's mailbox, or, for
// the scenario's fraction traffic.stray_receipts, a Send from a random
// user to a random peer of theirs instead (the correlated background of
// [traffic] is in the schedule itself). Handles are the schedule's. It returns the truth to score attacks with and the
// attacker's public knowledge (handle -> intro mailbox).
//
// Not modelled (as in Generate): the setup (registration, key
// transparency, first contacts, group creation), cover traffic, token
// issuance, fetch schedules.
func FromSchedule(sc *scenario.Scenario, s *scenario.Schedule, o ScheduleOptions, emit func(*attack.Event) error) (*score.Table, map[string]string, error) {
	if sc.Cover.RatePerDay > 0 {
		return nil, nil, fmt.Errorf("trace: FromSchedule does not model cover traffic (scenario %s)", sc.Name)
	}
	if o.Speed <= 0 {
		o.Speed = 1
	}
	if o.Latency <= 0 {
		o.Latency = 2 * time.Millisecond
	}
	perConv := sc.Mailboxes.PerConversation == nil || *sc.Mailboxes.PerConversation
	if sc.Naive {
		perConv = false
	}
	receipts := sc.Receipts.Enabled || sc.Naive
	rng := rand.New(rand.NewPCG(o.Seed, 0x7363)) // "sc"
	at := func(d time.Duration) int64 { return int64(float64(d) / o.Speed) }
	lat := int64(o.Latency)
	lag := func() int64 {
		if len(o.ReceiptLags) > 0 {
			return int64(o.ReceiptLags[rng.IntN(len(o.ReceiptLags))])
		}
		return at(drawDelay(sc.Receipts.Delay, rng)) + lat
	}
	tb := score.NewTable()
	ids := map[string]string{}
	mailbox := func(u, c int) string {
		if !perConv {
			return mailboxID(o.Seed, 1, int32(u), 0)
		}
		return mailboxID(o.Seed, 2, int32(u), int32(c))
	}
	for i, u := range s.Users {
		ids[u.Handle] = mailboxID(o.Seed, 1, int32(i), 0)
		tb.Own(ids[u.Handle], u.Handle)
	}
	for ci, c := range s.Convs {
		for _, a := range c.Members {
			tb.Own(mailbox(a, ci), s.Users[a].Handle)
			for _, b := range c.Members {
				tb.Link(s.Users[a].Handle, s.Users[b].Handle)
			}
		}
	}
	var evs []attack.Event
	epochs := map[uint32]*uint32{}
	epoch := func(t int64) *uint32 { // the token epoch (24 h), shared per value
		e := uint32(t/(24*3600*second) + 1)
		if epochs[e] == nil {
			epochs[e] = &e
		}
		return epochs[e]
	}
	send := func(t int64, from, to, c, bkt int) {
		mb, rc := mailbox(to, c), "r"+strconv.Itoa(to)
		if perConv {
			rc += "." + strconv.Itoa(c)
		}
		evs = append(evs,
			attack.Event{T: t, Conn: "s" + strconv.Itoa(from), Ev: "request", Kind: "Send", Mailbox: mb, Bucket: bkt, Epoch: epoch(t)},
			attack.Event{T: t + lat, Conn: rc, Ev: "deliver", Mailbox: mb, Bucket: bkt},
			attack.Event{T: t + lat + lat/2, Conn: rc, Ev: "ack", Mailbox: mb, N: 1})
	}
	// Stray receipts (traffic.stray_receipts), drawn as lab/population
	// draws them (scenario.Strays, in the order of the texts): the
	// receipt is dropped and a random user sends one, at the same time,
	// to a random peer of its direct chats.
	strays := scenario.NewStrays(s, sc.Traffic.StrayReceipts)
	for _, m := range s.Messages {
		t := at(m.At)
		c := s.Convs[m.Conv]
		for _, r := range s.Recipients(m) {
			send(t, m.From, r, m.Conv, bucketOf(m.Size))
			tb.Receive(s.Users[r].Handle, t)
			if receipts && !c.Group {
				from, to, conv := r, m.From, m.Conv
				if ok, x, y, cv := strays.Next(); ok {
					from, to, conv = x, y, cv
				}
				send(t+lag(), from, to, conv, 2048)
			}
		}
	}
	slices.SortStableFunc(evs, func(a, b attack.Event) int {
		switch {
		case a.T < b.T:
			return -1
		case a.T > b.T:
			return 1
		}
		return 0
	})
	for i := range evs {
		if err := emit(&evs[i]); err != nil {
			return nil, nil, err
		}
	}
	tb.Sort()
	return tb, ids, nil
}

// drawDelay draws a scenario delay (the client's: fixed, or exponential
// capped at Max).
func drawDelay(d scenario.Dist, rng *rand.Rand) time.Duration {
	switch d.Dist {
	case "fixed":
		return d.Mean.Duration
	case "", "exp":
		x := time.Duration(rng.ExpFloat64() * float64(d.Mean.Duration))
		if d.Max.Duration > 0 {
			x = min(x, d.Max.Duration)
		}
		return x
	case "uniform":
		return d.Min.Duration + time.Duration(rng.Float64()*float64(d.Max.Duration-d.Min.Duration))
	}
	return d.Mean.Duration
}

// bucketOf is the padding bucket of a text of n bytes (the smallest
// bucket, 2 KiB, holds any text the scenarios write below about 1.5 KiB).
func bucketOf(n int) int {
	if n < 1500 {
		return 2048
	}
	return 16384
}
