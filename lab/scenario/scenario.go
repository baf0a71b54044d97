package scenario

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Limits of a scenario. A live run holds hundreds of users at most on one
// machine (docs/research.md); the schedule itself is cheap, so the user
// limit is the trace mode's, not the live run's.
const (
	MaxUsers    = 1_000_000
	MaxDuration = 30 * 24 * time.Hour
	MaxSize     = 1<<16 - 1 // bytes of one text (client/content.MaxText)
	MaxSpeed    = 1e6
	MaxRate     = 100_000 // messages per user per simulated day
	// MaxMessages bounds one schedule, so a typo in a rate cannot fill
	// the memory.
	MaxMessages = 50_000_000
)

// ErrInvalid is wrapped by every error about a scenario's content.
var ErrInvalid = errors.New("invalid scenario")

// Duration is a time.Duration written as a Go duration string ("1.5s",
// "24h") in the file.
type Duration struct{ time.Duration }

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like 500ms or 24h", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Scenario is one scenario file. Zero values take the defaults Parse
// documents beside each field.
type Scenario struct {
	Name        string `toml:"name"`        // required: [a-z0-9-], names the run
	Description string `toml:"description"` // free text
	// Users is the population size (>= 2).
	Users int `toml:"users"`
	// Duration is the simulated length of the run; default 24h.
	Duration Duration `toml:"duration"`
	// Speed is how much faster than real time a live run goes; default
	// 720 (a simulated day in two minutes). qpc-lab run -speed overrides.
	Speed float64 `toml:"speed"`
	// Epoch is the attacker's time bin in simulated time (Martiny et al.
	// use 1 s); default 1s. The population does not use it: attacks read
	// it from the run's manifest.
	Epoch Duration `toml:"epoch"`
	// Naive plays Signal's sealed sender: one long-lived mailbox per user
	// (mailboxes.per_conversation = false) and delivery receipts at once
	// (receipts.enabled = true, receipts.delay fixed, default 0).
	Naive bool `toml:"naive"`

	Graph     Graph     `toml:"graph"`
	Timing    Timing    `toml:"timing"`
	Sizes     Sizes     `toml:"sizes"`
	Receipts  Receipts  `toml:"receipts"`
	Cover     Cover     `toml:"cover"`
	Mailboxes Mailboxes `toml:"mailboxes"`
	Traffic   Traffic   `toml:"traffic"`
}

// Graph is the conversation graph.
type Graph struct {
	// Contacts is the number of direct conversations each user has (its
	// degree in the graph of pairs); default 2 (or users-1 if fewer), and 0
	// means none. A user may end with fewer
	// when the population is too small.
	Contacts int `toml:"contacts"`
	// Popular accounts have PopularDegree direct conversations each on
	// top of their Contacts (a celebrity, a help desk); default 0.
	Popular       int `toml:"popular"`
	PopularDegree int `toml:"popular_degree"`
	// Groups is the number of group conversations, each with between
	// GroupMin and GroupMax members (default 3 and 6).
	Groups   int `toml:"groups"`
	GroupMin int `toml:"group_min"`
	GroupMax int `toml:"group_max"`
}

// Timing is when users write.
type Timing struct {
	// RatePerDay is each user's rate of new messages (a Poisson process),
	// per simulated day, before bursts and replies; default 50 (Martiny et
	// al.'s).
	RatePerDay float64 `toml:"rate_per_day"`
	// Diurnal is a relative rate for each hour of the simulated day
	// (24 values >= 0, not all 0); empty: flat.
	Diurnal []float64 `toml:"diurnal"`
	// BurstProb is the probability that a new message starts a burst of
	// BurstMin..BurstMax messages (counting it) to the same conversation,
	// BurstGap apart.
	BurstProb float64 `toml:"burst_prob"`
	BurstMin  int     `toml:"burst_min"` // default 2
	BurstMax  int     `toml:"burst_max"` // default 5
	BurstGap  Dist    `toml:"burst_gap"` // default exp, mean 10s
	// ReplyProb is the probability that a message is answered by another
	// member (the peer of a direct chat, a random member of a group)
	// after ReplyDelay; replies are answered in turn, at most ReplyDepth
	// deep (default 3).
	ReplyProb  float64 `toml:"reply_prob"`
	ReplyDelay Dist    `toml:"reply_delay"` // default exp, mean 2m
	ReplyDepth int     `toml:"reply_depth"`
}

// Dist is a distribution of durations.
type Dist struct {
	// Dist is "fixed" (always Mean), "exp" (exponential with mean Mean),
	// "uniform" (between Min and Max) or "lognormal" (median Mean, shape
	// Sigma). Max, if set, caps every kind.
	Dist  string   `toml:"dist"`
	Mean  Duration `toml:"mean"`
	Min   Duration `toml:"min"`
	Max   Duration `toml:"max"`
	Sigma float64  `toml:"sigma"`
}

// Sizes is the distribution of text lengths in bytes.
type Sizes struct {
	// Dist is "fixed" (always Median), "lognormal" (median Median, shape
	// Sigma) or "choice" (one of Choices with Weights); default lognormal,
	// median 60, sigma 1. Every kind is clamped to Min..Max (default
	// 1..4000).
	Dist    string    `toml:"dist"`
	Median  int       `toml:"median"`
	Sigma   float64   `toml:"sigma"`
	Min     int       `toml:"min"`
	Max     int       `toml:"max"`
	Choices []int     `toml:"choices"`
	Weights []float64 `toml:"weights"`
}

// Receipts are delivery receipts, sent by the client that received a
// text, in direct chats (the client never sends them in groups).
type Receipts struct {
	Enabled bool `toml:"enabled"`
	// Delay is the client's delay before a receipt leaves: "fixed" or
	// "exp" (the client's own distribution, capped at Max); default exp,
	// mean 30s, max 5m (client.DefaultReceiptDelay).
	Delay Dist `toml:"delay"`
}

// Cover is cover traffic (client.CoverOptions).
type Cover struct {
	// RatePerDay is each user's cover rate in envelopes per simulated day;
	// 0: off. The user guide's example rate, 0.005/s, is 432 a day.
	RatePerDay float64 `toml:"rate_per_day"`
	// FetchEvery is how often a client in cover mode fetches; default 30s.
	FetchEvery Duration `toml:"fetch_every"`
}

// Mailboxes says where conversations receive.
type Mailboxes struct {
	// PerConversation: each conversation receives at fresh mailboxes of
	// its own (qpc's default, and the default here); false: at the
	// user's intro mailbox (naive mode, client.Options.SingleMailbox).
	PerConversation *bool `toml:"per_conversation"`
}

// Traffic is the traffic of Martiny et al.'s published simulation
// (repository timartiny/Improving-Signal-Sealed-Sender, list_attack.py,
// read for the facts), which a live run plays and the trace mode
// models alike (lab/trace.FromScenario); all 0, the default, is the
// lab's own traffic: every receipt reaches the text's writer, new
// messages go to independent random conversations.
type Traffic struct {
	// StrayReceipts is the fraction of delivery receipts that do not
	// reach the text's writer: the receipt is dropped and, at the same
	// time, a random user sends one to a random contact of theirs (the
	// paper's simulation sends the target's receipt from a random user to
	// a random user in a third of its epochs: 1/3). Needs
	// receipts.enabled.
	StrayReceipts float64 `toml:"stray_receipts"`
	// Replies and Repeats are the fractions of new messages (not the
	// timing replies of timing.reply_prob) that, instead of going to a
	// random conversation of their writer, answer (another member writes,
	// in the same conversation) or repeat (the same writer, the same
	// conversation) a new message drawn uniformly from all earlier ones:
	// correlated background, as the paper's simulation draws a quarter of
	// each epoch's messages each way (0.25 and 0.25).
	Replies float64 `toml:"replies"`
	Repeats float64 `toml:"repeats"`
}

// Load reads and parses the scenario file at path.
func Load(path string) (*Scenario, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	sc, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return sc, nil
}

// Parse reads a scenario, fills in the defaults and validates it. Unknown
// keys are errors: a misspelt key silently taking its default would run
// another experiment than the one written down.
func Parse(raw []byte) (*Scenario, error) {
	var sc Scenario
	md, err := toml.Decode(string(raw), &sc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		names := make([]string, len(und))
		for i, k := range und {
			names[i] = strconv.Quote(k.String())
		}
		return nil, fmt.Errorf("%w: unknown key %s", ErrInvalid, strings.Join(names, ", "))
	}
	if sc.Naive {
		if md.IsDefined("mailboxes", "per_conversation") && *sc.Mailboxes.PerConversation {
			return nil, fmt.Errorf("%w: naive mode has one mailbox per user: mailboxes.per_conversation = true contradicts it", ErrInvalid)
		}
		if md.IsDefined("receipts", "enabled") && !sc.Receipts.Enabled {
			return nil, fmt.Errorf("%w: naive mode sends receipts at once: receipts.enabled = false contradicts it", ErrInvalid)
		}
		f := false
		sc.Mailboxes.PerConversation = &f
		sc.Receipts.Enabled = true
		if !md.IsDefined("receipts", "delay") {
			sc.Receipts.Delay = Dist{Dist: "fixed"}
		}
	}
	if !md.IsDefined("graph", "contacts") {
		// Two contacts each, or as many as a tiny population has; an
		// explicit 0 stays 0 (groups only).
		sc.Graph.Contacts = max(min(2, sc.Users-1), 0)
	}
	sc.setDefaults()
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return &sc, nil
}

func (sc *Scenario) setDefaults() {
	if sc.Duration.Duration == 0 {
		sc.Duration.Duration = 24 * time.Hour
	}
	if sc.Speed == 0 {
		sc.Speed = 720
	}
	if sc.Epoch.Duration == 0 {
		sc.Epoch.Duration = time.Second
	}
	g := &sc.Graph
	if g.GroupMin == 0 {
		g.GroupMin = 3
	}
	if g.GroupMax == 0 {
		g.GroupMax = max(6, g.GroupMin)
	}
	t := &sc.Timing
	if t.RatePerDay == 0 {
		t.RatePerDay = 50
	}
	if t.BurstMin == 0 {
		t.BurstMin = 2
	}
	if t.BurstMax == 0 {
		t.BurstMax = max(5, t.BurstMin)
	}
	if t.BurstGap.Dist == "" {
		t.BurstGap = Dist{Dist: "exp", Mean: Duration{10 * time.Second}}
	}
	if t.ReplyDelay.Dist == "" {
		t.ReplyDelay = Dist{Dist: "exp", Mean: Duration{2 * time.Minute}}
	}
	if t.ReplyDepth == 0 {
		t.ReplyDepth = 3
	}
	s := &sc.Sizes
	if s.Dist == "" {
		s.Dist, s.Median, s.Sigma = "lognormal", 60, 1
	}
	if s.Min == 0 {
		s.Min = 1
	}
	if s.Max == 0 {
		s.Max = max(4000, s.Min)
	}
	if sc.Receipts.Delay.Dist == "" {
		sc.Receipts.Delay = Dist{Dist: "exp", Mean: Duration{30 * time.Second}, Max: Duration{5 * time.Minute}}
	}
	if sc.Cover.FetchEvery.Duration == 0 {
		sc.Cover.FetchEvery.Duration = 30 * time.Second
	}
	if sc.Mailboxes.PerConversation == nil {
		t := true
		sc.Mailboxes.PerConversation = &t
	}
}

// PerConversation reports whether conversations get mailboxes of their own.
func (sc *Scenario) PerConversation() bool {
	return sc.Mailboxes.PerConversation == nil || *sc.Mailboxes.PerConversation
}

// Validate checks a scenario whose defaults are filled in (Parse does
// both), naming the key at fault.
func (sc *Scenario) Validate() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, key, fmt.Sprintf(format, a...))
	}
	if sc.Name == "" || strings.Trim(sc.Name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || len(sc.Name) > 64 {
		return bad("name", "%q: want 1-64 characters of [a-z0-9-]", sc.Name)
	}
	if sc.Users < 2 || sc.Users > MaxUsers {
		return bad("users", "%d: want 2..%d", sc.Users, MaxUsers)
	}
	if d := sc.Duration.Duration; d <= 0 || d > MaxDuration {
		return bad("duration", "%v: want more than 0 and at most %v", d, MaxDuration)
	}
	if !(sc.Speed > 0 && sc.Speed <= MaxSpeed) {
		return bad("speed", "%v: want more than 0 and at most %g", sc.Speed, float64(MaxSpeed))
	}
	if sc.Epoch.Duration <= 0 || sc.Epoch.Duration > sc.Duration.Duration {
		return bad("epoch", "%v: want more than 0 and at most the duration", sc.Epoch.Duration)
	}
	g := sc.Graph
	if g.Contacts < 0 || g.Contacts >= sc.Users {
		return bad("graph.contacts", "%d: want 0..users-1 (%d)", g.Contacts, sc.Users-1)
	}
	if g.Popular < 0 || g.Popular > sc.Users {
		return bad("graph.popular", "%d: want 0..users", g.Popular)
	}
	if g.PopularDegree < 0 || g.PopularDegree >= sc.Users {
		return bad("graph.popular_degree", "%d: want 0..users-1", g.PopularDegree)
	}
	if g.Popular > 0 && g.PopularDegree == 0 {
		return bad("graph.popular_degree", "popular accounts need a degree")
	}
	if g.Groups < 0 || g.Groups > sc.Users*10 {
		return bad("graph.groups", "%d: want 0..10×users", g.Groups)
	}
	if g.GroupMin < 2 || g.GroupMax < g.GroupMin || (g.Groups > 0 && g.GroupMin > sc.Users) {
		return bad("graph.group_min/group_max", "%d..%d: want 2 <= group_min <= group_max, group_min <= users", g.GroupMin, g.GroupMax)
	}
	if g.Contacts == 0 && g.Groups == 0 && g.Popular == 0 {
		return bad("graph", "no conversations: set contacts, groups or popular")
	}
	t := sc.Timing
	if !(t.RatePerDay > 0 && t.RatePerDay <= MaxRate) {
		return bad("timing.rate_per_day", "%v: want more than 0 and at most %d", t.RatePerDay, MaxRate)
	}
	if len(t.Diurnal) != 0 {
		if len(t.Diurnal) != 24 {
			return bad("timing.diurnal", "%d values: want 24, one per hour", len(t.Diurnal))
		}
		sum := 0.0
		for i, w := range t.Diurnal {
			if !(w >= 0 && w <= 1e6) {
				return bad("timing.diurnal", "hour %d: %v: want 0..1e6", i, w)
			}
			sum += w
		}
		if sum == 0 {
			return bad("timing.diurnal", "all zero: nobody would ever write")
		}
	}
	if !(t.BurstProb >= 0 && t.BurstProb <= 1) {
		return bad("timing.burst_prob", "%v: want 0..1", t.BurstProb)
	}
	if t.BurstMin < 1 || t.BurstMax < t.BurstMin || t.BurstMax > 1000 {
		return bad("timing.burst_min/burst_max", "%d..%d: want 1 <= burst_min <= burst_max <= 1000", t.BurstMin, t.BurstMax)
	}
	if err := t.BurstGap.check("timing.burst_gap"); err != nil {
		return err
	}
	if !(t.ReplyProb >= 0 && t.ReplyProb <= 1) {
		return bad("timing.reply_prob", "%v: want 0..1", t.ReplyProb)
	}
	if err := t.ReplyDelay.check("timing.reply_delay"); err != nil {
		return err
	}
	if t.ReplyDepth < 1 || t.ReplyDepth > 100 {
		return bad("timing.reply_depth", "%d: want 1..100", t.ReplyDepth)
	}
	if err := sc.Sizes.check(); err != nil {
		return err
	}
	if err := sc.Receipts.Delay.check("receipts.delay"); err != nil {
		return err
	}
	if k := sc.Receipts.Delay.Dist; k != "fixed" && k != "exp" {
		return bad("receipts.delay.dist", "%q: the client draws receipt delays as fixed or exp", k)
	}
	if !(sc.Cover.RatePerDay >= 0 && sc.Cover.RatePerDay <= 8_640_000) {
		return bad("cover.rate_per_day", "%v: want 0..8640000 (100/s, the client's ceiling)", sc.Cover.RatePerDay)
	}
	if sc.Cover.FetchEvery.Duration <= 0 {
		return bad("cover.fetch_every", "%v: want more than 0", sc.Cover.FetchEvery.Duration)
	}
	tr := sc.Traffic
	if !(tr.StrayReceipts >= 0 && tr.StrayReceipts <= 1) {
		return bad("traffic.stray_receipts", "%v: want 0..1", tr.StrayReceipts)
	}
	if tr.StrayReceipts > 0 && !sc.Receipts.Enabled {
		return bad("traffic.stray_receipts", "%v: receipts are off: there is no receipt to stray", tr.StrayReceipts)
	}
	if !(tr.Replies >= 0 && tr.Replies <= 1) {
		return bad("traffic.replies", "%v: want 0..1", tr.Replies)
	}
	if !(tr.Repeats >= 0 && tr.Repeats <= 1-tr.Replies) {
		return bad("traffic.repeats", "%v: want 0..1 - traffic.replies (%v)", tr.Repeats, tr.Replies)
	}
	if sc.Naive && (sc.PerConversation() || !sc.Receipts.Enabled) {
		return bad("naive", "naive mode needs mailboxes.per_conversation = false and receipts.enabled = true")
	}
	// A rough bound of the schedule's size, before Generate allocates it.
	burst := 1 + t.BurstProb*float64(t.BurstMax)
	reply := 1.0
	if t.ReplyProb < 1 {
		reply = 1 / (1 - t.ReplyProb)
	} else {
		reply = float64(t.ReplyDepth + 1)
	}
	if n := float64(sc.Users) * t.RatePerDay * sc.Duration.Hours() / 24 * burst * reply; n > MaxMessages {
		return bad("timing", "about %.0f messages: at most %d per schedule", n, MaxMessages)
	}
	return nil
}

func (d Dist) check(key string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, key, fmt.Sprintf(format, a...))
	}
	if d.Mean.Duration < 0 || d.Min.Duration < 0 || d.Max.Duration < 0 {
		return bad("durations must not be negative")
	}
	if d.Max.Duration > MaxDuration || d.Mean.Duration > MaxDuration {
		return bad("at most %v", MaxDuration)
	}
	switch d.Dist {
	case "fixed":
	case "exp":
		if d.Mean.Duration <= 0 {
			return bad("exp needs mean > 0")
		}
	case "uniform":
		if d.Max.Duration < d.Min.Duration || d.Max.Duration == 0 {
			return bad("uniform needs 0 <= min <= max, max > 0")
		}
	case "lognormal":
		if d.Mean.Duration <= 0 || !(d.Sigma > 0 && d.Sigma <= 10) {
			return bad("lognormal needs mean (the median) > 0 and 0 < sigma <= 10")
		}
	default:
		return bad("dist %q: want fixed, exp, uniform or lognormal", d.Dist)
	}
	return nil
}

func (s Sizes) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: sizes: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if s.Min < 1 || s.Max < s.Min || s.Max > MaxSize {
		return bad("min..max %d..%d: want 1 <= min <= max <= %d", s.Min, s.Max, MaxSize)
	}
	switch s.Dist {
	case "fixed":
		if s.Median < 1 || s.Median > MaxSize {
			return bad("fixed needs median 1..%d", MaxSize)
		}
	case "lognormal":
		if s.Median < 1 || s.Median > MaxSize || !(s.Sigma > 0 && s.Sigma <= 10) {
			return bad("lognormal needs median 1..%d and 0 < sigma <= 10", MaxSize)
		}
	case "choice":
		if len(s.Choices) == 0 || len(s.Choices) > 1000 || len(s.Weights) != len(s.Choices) {
			return bad("choice needs 1..1000 choices and as many weights")
		}
		sum := 0.0
		for i, c := range s.Choices {
			if c < 1 || c > MaxSize || !(s.Weights[i] >= 0 && s.Weights[i] <= 1e6) {
				return bad("choice %d: size %d weight %v: want size 1..%d, weight 0..1e6", i, c, s.Weights[i], MaxSize)
			}
			sum += s.Weights[i]
		}
		if sum == 0 {
			return bad("choice weights are all zero")
		}
	default:
		return bad("dist %q: want fixed, lognormal or choice", s.Dist)
	}
	return nil
}
