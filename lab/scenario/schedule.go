package scenario

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Schedule is what a scenario and a seed fix: the users, the
// conversations and every message users write, in time order.
type Schedule struct {
	Scenario string
	Seed     int64
	Duration time.Duration // simulated
	Users    []User
	Convs    []Conv
	Messages []Message
}

// User is one simulated user.
type User struct {
	Name   string // the lab's name, "u1".. (ground truth)
	Handle string // the KT handle it registers
}

// Conv is one conversation; Members[0] creates it.
type Conv struct {
	ID      string // "c1"..
	Group   bool
	Name    string // the group's name; "" for a direct chat
	Members []int  // indexes into Schedule.Users
}

// Message is one text a user writes.
type Message struct {
	ID   string        // "m1".., in time order
	At   time.Duration // simulated time since the run's start
	From int           // index into Schedule.Users
	Conv int           // index into Schedule.Convs
	Size int           // bytes of text
	// Reply is the depth of the reply chain it answers (0: a new message).
	Reply int
}

// Handle is the handle of user i (0-based), valid for key transparency.
func Handle(i int) string { return fmt.Sprintf("labuser%d", i+1) }

// Generate draws the schedule of the scenario for seed. It depends on
// nothing else: the same scenario and seed give the same schedule.
func (sc *Scenario) Generate(seed int64) (*Schedule, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x716c61622d736368)) // "qlab-sch"
	s := &Schedule{Scenario: sc.Name, Seed: seed, Duration: sc.Duration.Duration}
	for i := range sc.Users {
		s.Users = append(s.Users, User{Name: fmt.Sprintf("u%d", i+1), Handle: Handle(i)})
	}
	s.Convs = sc.graph(rng)
	byUser := make([][]int, sc.Users)
	for ci, c := range s.Convs {
		for _, m := range c.Members {
			byUser[m] = append(byUser[m], ci)
		}
	}
	msgs, err := sc.messages(rng, s.Convs, byUser)
	if err != nil {
		return nil, err
	}
	s.Messages = msgs
	return s, nil
}

// graph draws the conversations: pairs so that each user has about
// Contacts direct chats, the popular accounts' extra pairs, then groups.
func (sc *Scenario) graph(rng *rand.Rand) []Conv {
	n := sc.Users
	g := sc.Graph
	deg := make([]int, n)
	edge := map[[2]int]bool{}
	var convs []Conv
	addPair := func(a, b int) {
		k := [2]int{min(a, b), max(a, b)}
		edge[k] = true
		deg[a]++
		deg[b]++
		convs = append(convs, Conv{ID: fmt.Sprintf("c%d", len(convs)+1), Members: []int{a, b}})
	}
	for a := range n {
		for tries := 0; deg[a] < g.Contacts && tries < 20*n+100; tries++ {
			b := rng.IntN(n)
			if b == a || deg[b] >= g.Contacts || edge[[2]int{min(a, b), max(a, b)}] {
				continue
			}
			addPair(a, b)
		}
	}
	for p := range g.Popular {
		added := 0
		for tries := 0; added < g.PopularDegree && tries < 20*n+100; tries++ {
			b := rng.IntN(n)
			if b == p || edge[[2]int{min(p, b), max(p, b)}] {
				continue
			}
			// The popular account is written to: its fans start the chat.
			addPair(b, p)
			added++
		}
	}
	for gi := range g.Groups {
		size := min(g.GroupMin+rng.IntN(g.GroupMax-g.GroupMin+1), n)
		members := make([]int, 0, size)
		in := map[int]bool{}
		for len(members) < size {
			if m := rng.IntN(n); !in[m] {
				in[m] = true
				members = append(members, m)
			}
		}
		convs = append(convs, Conv{ID: fmt.Sprintf("c%d", len(convs)+1), Group: true, Name: fmt.Sprintf("labgroup%d", gi+1), Members: members})
	}
	return convs
}

// diurnal returns the hourly weights relative to their mean (nil when
// flat) and the largest of them.
func (sc *Scenario) diurnal() (weights []float64, peak float64) {
	if len(sc.Timing.Diurnal) == 0 {
		return nil, 1
	}
	sum := 0.0
	for _, w := range sc.Timing.Diurnal {
		sum += w
	}
	mean := sum / 24
	weights = make([]float64, 24)
	for i, w := range sc.Timing.Diurnal {
		weights[i] = w / mean
		peak = max(peak, weights[i])
	}
	return weights, peak
}

type pending struct {
	at    time.Duration
	from  int
	conv  int
	reply int
}

// messages draws each user's Poisson process of new messages (thinned by
// the diurnal profile), their bursts and the replies.
func (sc *Scenario) messages(rng *rand.Rand, convs []Conv, byUser [][]int) ([]Message, error) {
	t := sc.Timing
	dur := sc.Duration.Duration
	weights, peak := sc.diurnal()
	perSec := t.RatePerDay / 86400 * peak // the thinning envelope
	var out []pending
	add := func(p pending) error {
		if p.at >= dur {
			return nil
		}
		if len(out) >= MaxMessages {
			return fmt.Errorf("%w: more than %d messages", ErrInvalid, MaxMessages)
		}
		out = append(out, p)
		return nil
	}
	// Replies are drawn after the new messages, in the order of their
	// causes, so that the order of drawing is fixed.
	for u := range sc.Users {
		if len(byUser[u]) == 0 {
			continue
		}
		at := time.Duration(0)
		for {
			gap := rng.ExpFloat64() / perSec
			at += time.Duration(gap * float64(time.Second))
			if at >= dur || gap > dur.Seconds()*2 {
				break
			}
			if weights != nil {
				hour := int(at/time.Hour) % 24
				if rng.Float64()*peak >= weights[hour] {
					continue
				}
			}
			conv := byUser[u][rng.IntN(len(byUser[u]))]
			if err := add(pending{at: at, from: u, conv: conv}); err != nil {
				return nil, err
			}
			if t.BurstProb > 0 && rng.Float64() < t.BurstProb {
				k := t.BurstMin + rng.IntN(t.BurstMax-t.BurstMin+1)
				bt := at
				for range k - 1 {
					bt += t.BurstGap.draw(rng)
					if err := add(pending{at: bt, from: u, conv: conv}); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	if tr := sc.Traffic; tr.Replies+tr.Repeats > 0 {
		sortPending(out)
		correlate(rng, out, convs, tr.Replies, tr.Repeats)
	}
	if t.ReplyProb > 0 {
		for i := 0; i < len(out); i++ {
			p := out[i]
			if p.reply >= t.ReplyDepth || rng.Float64() >= t.ReplyProb {
				continue
			}
			to := otherMember(rng, convs[p.conv].Members, p.from)
			if err := add(pending{at: p.at + t.ReplyDelay.draw(rng), from: to, conv: p.conv, reply: p.reply + 1}); err != nil {
				return nil, err
			}
		}
	}
	sortPending(out)
	msgs := make([]Message, len(out))
	for i, p := range out {
		msgs[i] = Message{ID: fmt.Sprintf("m%d", i+1), At: p.at, From: p.from, Conv: p.conv, Size: sc.Sizes.draw(rng), Reply: p.reply}
	}
	return msgs, nil
}

// sortPending sorts messages by time, then writer.
func sortPending(out []pending) {
	slices.SortStableFunc(out, func(a, b pending) int {
		switch {
		case a.at < b.at:
			return -1
		case a.at > b.at:
			return 1
		}
		return a.from - b.from
	})
}

// correlate turns the fractions replies and repeats of the new messages
// in out (sorted by time) into answers to and repeats of a new message
// drawn uniformly from the earlier ones (Traffic): an answer is written
// by another member of that message's conversation (its peer in a direct
// chat), a repeat by the same writer, both in that conversation, at the
// time the replaced message had.
func correlate(rng *rand.Rand, out []pending, convs []Conv, replies, repeats float64) {
	var past []int32
	for i := range out {
		if out[i].reply != 0 {
			continue
		}
		if x := rng.Float64(); x < replies+repeats && len(past) > 0 {
			b := out[past[rng.IntN(len(past))]]
			from := b.from
			if x < replies {
				from = otherMember(rng, convs[b.conv].Members, b.from)
			}
			out[i].from, out[i].conv = from, b.conv
		}
		past = append(past, int32(i))
	}
	sortPending(out)
}

// otherMember is a member of members other than from: the peer of a
// direct chat, a random other member of a group.
func otherMember(rng *rand.Rand, members []int, from int) int {
	if len(members) == 2 {
		if members[0] == from {
			return members[1]
		}
		return members[0]
	}
	to := members[rng.IntN(len(members)-1)]
	if to == from {
		to = members[len(members)-1]
	}
	return to
}

// draw returns one duration of the distribution.
func (d Dist) draw(rng *rand.Rand) time.Duration {
	var x float64 // seconds
	switch d.Dist {
	case "fixed":
		x = d.Mean.Seconds()
	case "exp":
		x = rng.ExpFloat64() * d.Mean.Seconds()
	case "uniform":
		x = d.Min.Seconds() + rng.Float64()*(d.Max.Seconds()-d.Min.Seconds())
	case "lognormal":
		x = d.Mean.Seconds() * math.Exp(d.Sigma*rng.NormFloat64())
	}
	v := time.Duration(min(x, MaxDuration.Seconds()) * float64(time.Second))
	if d.Max.Duration > 0 && v > d.Max.Duration {
		v = d.Max.Duration
	}
	return v
}

// draw returns one text size.
func (s Sizes) draw(rng *rand.Rand) int {
	var v float64
	switch s.Dist {
	case "fixed":
		v = float64(s.Median)
	case "lognormal":
		v = float64(s.Median) * math.Exp(s.Sigma*rng.NormFloat64())
	case "choice":
		sum := 0.0
		for _, w := range s.Weights {
			sum += w
		}
		x := rng.Float64() * sum
		v = float64(s.Choices[len(s.Choices)-1])
		for i, w := range s.Weights {
			if x < w {
				v = float64(s.Choices[i])
				break
			}
			x -= w
		}
	}
	return int(math.Round(min(max(v, float64(s.Min)), float64(s.Max))))
}

// Hash is a digest of the whole schedule: two schedules with the same
// hash are the same experiment.
func (s *Schedule) Hash() string {
	h := sha256.New()
	put := func(vs ...int64) {
		for _, v := range vs {
			h.Write(binary.BigEndian.AppendUint64(nil, uint64(v)))
		}
	}
	str := func(x string) { put(int64(len(x))); h.Write([]byte(x)) }
	str(s.Scenario)
	put(s.Seed, int64(s.Duration), int64(len(s.Users)), int64(len(s.Convs)), int64(len(s.Messages)))
	for _, u := range s.Users {
		str(u.Name)
		str(u.Handle)
	}
	for _, c := range s.Convs {
		str(c.ID)
		str(c.Name)
		g := int64(0)
		if c.Group {
			g = 1
		}
		put(g, int64(len(c.Members)))
		for _, m := range c.Members {
			put(int64(m))
		}
	}
	for _, m := range s.Messages {
		str(m.ID)
		put(int64(m.At), int64(m.From), int64(m.Conv), int64(m.Size), int64(m.Reply))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Recipients are the other members of the message's conversation.
func (s *Schedule) Recipients(m Message) []int {
	var to []int
	for _, u := range s.Convs[m.Conv].Members {
		if u != m.From {
			to = append(to, u)
		}
	}
	return to
}
