package trace

import (
	"container/heap"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"

	"github.com/quicprochat/qpc/lab/attack"
)

// Receipt modes.
const (
	ReceiptsOff    = "off"
	ReceiptsAtOnce = "immediate"
	ReceiptsJitter = "jitter"
)

// Params describe the modelled population. Times are nanoseconds.
type Params struct {
	Name     string
	Seed     uint64
	Users    int
	Duration int64
	// Contacts is how many background conversations each user has (random
	// pairings), RatePerDay how many messages a user writes a day to them.
	Contacts   int
	RatePerDay float64
	// Hot pairs (users 0..2·Hot-1, paired 2i with 2i+1) write to each other
	// every HotInterval on average, each direction: the targets.
	Hot         int
	HotInterval int64
	// PerConvMailboxes is qpc's design; false is naive (one mailbox per
	// user, its intro mailbox).
	PerConvMailboxes bool
	Receipts         string
	ReceiptDelay     int64 // immediate: the fixed delay (Martiny: 0.5 s)
	ReceiptMean      int64 // jitter: exponential mean (qpc: 30 s) ...
	ReceiptMax       int64 // ... capped (qpc: 5 min)
	// ReplyProb of a text being answered after an exponential ReplyMean.
	ReplyProb float64
	ReplyMean int64
	// StrayReceipts is the fraction of receipts that do not reach the
	// text's sender: the receipt is replaced by one from a random user to
	// a random user at the same time (in per-conversation mode to one of
	// that user's background conversation mailboxes). Martiny et al.'s
	// published simulation does this to a third of the target's receipts
	// (the scenario key traffic.stray_receipts, FromScenario); 0 is every
	// receipt delivered.
	StrayReceipts float64
	// BgReplies and BgRepeats are the fractions of background texts that
	// are, instead of a new text in a random conversation, a reply to (the
	// reverse direction of) or a repeat of (the same direction as) a
	// background text drawn uniformly from all earlier ones: correlated
	// background, as Martiny et al.'s simulation draws a quarter of each
	// epoch's messages each way (traffic.replies and traffic.repeats,
	// FromScenario). 0 is independent (Poisson) background.
	BgReplies float64
	BgRepeats float64
	// CoverRate is envelopes per second per user in cover mode (0 off).
	CoverRate float64
	// TokenEpoch is the delivery-token epoch length (default 24 h).
	TokenEpoch int64
	// Latency is the server's store-and-push delay (default 20 ms).
	Latency int64
}

const second = int64(1e9)

// Event kinds in flight.
const (
	pDeliver = iota
	pAck
	pSend // a message due to be sent (receipt, reply); queued under cover
)

// Message kinds.
const (
	kText = iota
	kReceipt
	kCover
)

type pend struct {
	t    int64
	what int
	from int32
	to   int32
	conv int32
	kind int8
	bkt  int32
	seq  uint64
}

type pq []pend

func (q pq) Len() int { return len(q) }
func (q pq) Less(i, j int) bool {
	if q[i].t != q[j].t {
		return q[i].t < q[j].t
	}
	return q[i].seq < q[j].seq
}
func (q pq) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pq) Push(x any)   { *q = append(*q, x.(pend)) }
func (q *pq) Pop() any     { o := *q; x := o[len(o)-1]; *q = o[:len(o)-1]; return x }

// gen is one run.
type gen struct {
	p      Params
	rng    *rand.Rand
	perm   [][]int32 // perm[j][u]: u's partner in background conversation j
	q      pq
	seq    uint64
	opened []uint64 // bitset of receive connections opened
	queue  map[int32][]pend
	emit   func(*attack.Event) error
	truth  *Truth
	ev     attack.Event
	epoch  uint32 // the token epoch ev points to; emit must not keep ev
	// past is every background text so far (BgReplies, BgRepeats).
	past []bgText
}

type bgText struct{ u, v, j int32 }

// Generate runs the model and passes every event, in time order, to emit;
// the event is reused after emit returns.
func Generate(p Params, emit func(*attack.Event) error) (*Truth, error) {
	if p.Users < 2 || p.Duration <= 0 {
		return nil, fmt.Errorf("trace: need at least 2 users and a duration, have %d and %d", p.Users, p.Duration)
	}
	if 2*p.Hot > p.Users {
		return nil, fmt.Errorf("trace: %d hot pairs need %d users, have %d", p.Hot, 2*p.Hot, p.Users)
	}
	if p.StrayReceipts < 0 || p.StrayReceipts > 1 || p.BgReplies < 0 || p.BgRepeats < 0 || p.BgReplies+p.BgRepeats > 1 {
		return nil, fmt.Errorf("trace: stray receipts %g, background replies %g and repeats %g must be fractions (replies + repeats at most 1)",
			p.StrayReceipts, p.BgReplies, p.BgRepeats)
	}
	if p.TokenEpoch <= 0 {
		p.TokenEpoch = 24 * 3600 * second
	}
	if p.Latency <= 0 {
		p.Latency = 20 * 1e6
	}
	g := &gen{p: p, rng: rand.New(rand.NewPCG(p.Seed, 0x71c)), queue: map[int32][]pend{}, emit: emit}
	g.truth = &Truth{p: p, recv: map[int32][]int64{}}
	for range p.Contacts {
		g.perm = append(g.perm, g.pairing())
	}
	g.truth.perm = g.perm
	g.opened = make([]uint64, (p.Users*(p.Contacts+1))/64+1)
	if err := g.run(); err != nil {
		return nil, err
	}
	return g.truth, nil
}

// pairing is a random perfect matching as an involution (an odd user out
// is paired with itself and writes to no one there).
func (g *gen) pairing() []int32 {
	n := g.p.Users
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	g.rng.Shuffle(n, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	m := make([]int32, n)
	for i := 0; i+1 < n; i += 2 {
		m[idx[i]], m[idx[i+1]] = idx[i+1], idx[i]
	}
	if n%2 == 1 {
		m[idx[n-1]] = idx[n-1]
	}
	return m
}

func (g *gen) exp(rate float64) int64 { // rate per ns
	return int64(g.rng.ExpFloat64() / rate)
}

func (g *gen) run() error {
	p := g.p
	bgRate := float64(p.Users) * p.RatePerDay / (86400 * 1e9)
	hotRate := 0.0
	if p.Hot > 0 && p.HotInterval > 0 {
		hotRate = float64(2*p.Hot) / float64(p.HotInterval)
	}
	coverRate := float64(p.Users) * p.CoverRate / 1e9
	next := func(rate float64, now int64) int64 {
		if rate <= 0 || (rate == bgRate && p.Contacts == 0) {
			return math.MaxInt64
		}
		return now + g.exp(rate)
	}
	tBg, tHot, tCover := next(bgRate, 0), next(hotRate, 0), next(coverRate, 0)
	for {
		t := min(tBg, tHot, tCover)
		if len(g.q) > 0 && g.q[0].t <= t {
			x := heap.Pop(&g.q).(pend)
			if x.t >= p.Duration {
				return nil
			}
			if err := g.handle(x); err != nil {
				return err
			}
			continue
		}
		if t >= p.Duration {
			return nil
		}
		switch t {
		case tBg:
			tBg = next(bgRate, t)
			u, v, j := g.background()
			if v != u {
				g.message(t, u, v, j, kText)
			}
		case tHot:
			tHot = next(hotRate, t)
			u := int32(g.rng.IntN(2 * p.Hot))
			g.message(t, u, u^1, int32(p.Contacts), kText)
		case tCover:
			tCover = next(coverRate, t)
			u := int32(g.rng.IntN(p.Users))
			if err := g.tick(t, u); err != nil {
				return err
			}
		}
	}
}

// background draws a background text: a reply to or a repeat of an
// earlier one (BgReplies, BgRepeats), else a random user writing in a
// random one of its conversations.
func (g *gen) background() (u, v, j int32) {
	p := g.p
	if n := len(g.past); n > 0 && p.BgReplies+p.BgRepeats > 0 {
		x := g.rng.Float64()
		if x < p.BgReplies+p.BgRepeats {
			b := g.past[g.rng.IntN(n)]
			if x < p.BgReplies {
				b.u, b.v = b.v, b.u
			}
			g.past = append(g.past, b)
			return b.u, b.v, b.j
		}
	}
	u = int32(g.rng.IntN(p.Users))
	j = int32(g.rng.IntN(p.Contacts))
	v = g.perm[j][u]
	if v != u && p.BgReplies+p.BgRepeats > 0 {
		g.past = append(g.past, bgText{u, v, j})
	}
	return u, v, j
}

// message is a message u wants to write to v in conversation j: sent at
// once, or queued for u's next cover tick.
func (g *gen) message(t int64, u, v, j int32, kind int8) {
	x := pend{t: t, what: pSend, from: u, to: v, conv: j, kind: kind, bkt: g.bucket(u, v, j, kind)}
	if g.p.CoverRate > 0 {
		g.queue[u] = append(g.queue[u], x)
		return
	}
	_ = g.send(t, x)
}

// tick is a cover tick of u: the oldest queued message, else a dummy to
// one of u's conversations (the hot one mostly, as dummies follow real
// traffic).
func (g *gen) tick(t int64, u int32) error {
	if q := g.queue[u]; len(q) > 0 {
		x := q[0]
		if len(q) == 1 {
			delete(g.queue, u)
		} else {
			g.queue[u] = q[1:]
		}
		return g.send(t, x)
	}
	var j int32
	if int(u) < 2*g.p.Hot && g.rng.Float64() < 0.9 {
		j = int32(g.p.Contacts)
	} else if g.p.Contacts > 0 {
		j = int32(g.rng.IntN(g.p.Contacts))
	} else {
		return nil
	}
	v := g.partner(u, j)
	if v == u {
		return nil
	}
	return g.send(t, pend{from: u, to: v, conv: j, kind: kCover, bkt: g.bucket(u, v, j, kText)})
}

func (g *gen) partner(u, j int32) int32 {
	if int(j) == g.p.Contacts {
		if int(u) < 2*g.p.Hot {
			return u ^ 1
		}
		return u
	}
	return g.perm[j][u]
}

// bucket draws a record size from the conversation's profile: text-only
// conversations stay in 2 KiB; one in three sends media too.
func (g *gen) bucket(u, v, j int32, kind int8) int32 {
	if kind == kReceipt {
		return 2048
	}
	a, b := min(u, v), max(u, v)
	h := splitmix(g.p.Seed ^ uint64(a)<<32 ^ uint64(b) ^ uint64(j)<<56)
	if h%3 != 0 {
		return 2048
	}
	switch x := g.rng.Float64(); {
	case x < 0.6:
		return 2048
	case x < 0.85:
		return 16384
	default:
		return 131072
	}
}

func (g *gen) push(x pend) {
	g.seq++
	x.seq = g.seq
	heap.Push(&g.q, x)
}

func (g *gen) send(t int64, x pend) error {
	p := g.p
	g.epoch = uint32(t/p.TokenEpoch + 1)
	g.ev = attack.Event{T: t, Conn: g.sendConn(x.from, x.conv), Ev: "request", Kind: "Send",
		Mailbox: g.mailbox(x.to, x.conv), Bucket: int(x.bkt), Epoch: &g.epoch}
	if err := g.emit(&g.ev); err != nil {
		return err
	}
	d := x
	d.t, d.what = t+p.Latency, pDeliver
	g.push(d)
	return nil
}

func (g *gen) handle(x pend) error {
	p := g.p
	switch x.what {
	case pSend:
		if p.CoverRate > 0 {
			g.queue[x.from] = append(g.queue[x.from], x)
			return nil
		}
		return g.send(x.t, x)
	case pDeliver:
		conn := g.recvConn(x.to, x.conv)
		mb := g.mailbox(x.to, x.conv)
		if err := g.open(x.t, x.to, x.conv, conn, mb); err != nil {
			return err
		}
		g.ev = attack.Event{T: x.t, Conn: conn, Ev: "deliver", Mailbox: mb, Bucket: int(x.bkt)}
		if err := g.emit(&g.ev); err != nil {
			return err
		}
		a := x
		a.t, a.what = x.t+p.Latency/2, pAck
		g.push(a)
		if x.kind != kText {
			return nil
		}
		g.truth.recv[x.to] = append(g.truth.recv[x.to], x.t)
		g.truth.Texts++
		if d, ok := g.receiptDelay(); ok {
			r := pend{t: x.t + d, what: pSend, from: x.to, to: x.from, conv: x.conv, kind: kReceipt, bkt: 2048}
			if p.StrayReceipts > 0 && g.rng.Float64() < p.StrayReceipts {
				r.from, r.to = int32(g.rng.IntN(p.Users)), int32(g.rng.IntN(p.Users))
				r.conv = int32(p.Contacts) // no background conversations: the hot one
				if p.Contacts > 0 {
					r.conv = int32(g.rng.IntN(p.Contacts))
				}
			}
			g.push(r)
		}
		if p.ReplyProb > 0 && g.rng.Float64() < p.ReplyProb {
			r := pend{t: x.t + g.exp(1/float64(p.ReplyMean)), what: pSend, from: x.to, to: x.from, conv: x.conv, kind: kText}
			r.bkt = g.bucket(r.from, r.to, r.conv, kText)
			g.push(r)
		}
	case pAck:
		g.ev = attack.Event{T: x.t, Conn: g.recvConn(x.to, x.conv), Ev: "ack", Mailbox: g.mailbox(x.to, x.conv), N: 1}
		return g.emit(&g.ev)
	}
	return nil
}

func (g *gen) receiptDelay() (int64, bool) {
	switch g.p.Receipts {
	case ReceiptsAtOnce:
		return g.p.ReceiptDelay, true
	case ReceiptsJitter:
		return min(g.exp(1/float64(g.p.ReceiptMean)), g.p.ReceiptMax), true
	}
	return 0, false
}

// open emits a receive connection's open and subscribe the first time it
// is used (a subscription that carries nothing is invisible to attacks
// that count traffic, so the model opens lazily).
func (g *gen) open(t int64, u, j int32, conn, mb string) error {
	i := int(u)
	if g.p.PerConvMailboxes {
		i = int(u)*(g.p.Contacts+1) + int(j)
	}
	if g.opened[i/64]&(1<<(i%64)) != 0 {
		return nil
	}
	g.opened[i/64] |= 1 << (i % 64)
	g.ev = attack.Event{T: t, Conn: conn, Ev: "open", Transport: "udp"}
	if err := g.emit(&g.ev); err != nil {
		return err
	}
	g.ev = attack.Event{T: t, Conn: conn, Ev: "request", Kind: "Subscribe", Mailbox: mb}
	if err := g.emit(&g.ev); err != nil {
		return err
	}
	g.ev = attack.Event{T: t, Conn: conn, Ev: "subscribe", Mailbox: mb}
	return g.emit(&g.ev)
}

// Connections (the client SDK's roles, client/messenger.go): naive reads
// its one mailbox on one connection and sends sealed on another (as
// Signal's sealed sender uses an unauthenticated socket); qpc reads and
// writes each conversation on that conversation's connection, and in
// cover mode sends everything on the cover connection.
func (g *gen) recvConn(u, j int32) string {
	if !g.p.PerConvMailboxes {
		return "r" + strconv.Itoa(int(u))
	}
	return "c" + strconv.Itoa(int(u)) + "." + strconv.Itoa(int(j))
}

func (g *gen) sendConn(u, j int32) string {
	switch {
	case g.p.CoverRate > 0:
		return "v" + strconv.Itoa(int(u))
	case !g.p.PerConvMailboxes:
		return "s" + strconv.Itoa(int(u))
	}
	return "c" + strconv.Itoa(int(u)) + "." + strconv.Itoa(int(j))
}

func (g *gen) mailbox(u, j int32) string {
	if !g.p.PerConvMailboxes {
		return g.truth.Intro(u)
	}
	return mailboxID(g.p.Seed, 2, u, j)
}

// mailboxID is a 64-bit mailbox ID: a keyed bijection of (role, user,
// conversation), so the scorer can invert it (ownerOf) without an index.
// Attacks treat it as opaque; it is as unstructured as a random ID to
// anything that does not know the seed.
func mailboxID(seed uint64, role byte, u, j int32) string {
	packed := uint64(role)<<60 | uint64(uint32(u))<<20 | uint64(uint32(j))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], fmix(packed^splitmix(seed)))
	return hex.EncodeToString(b[:])
}

func ownerOf(seed uint64, m string) (role byte, u, j int32, ok bool) {
	b, err := hex.DecodeString(m)
	if err != nil || len(b) != 8 {
		return 0, 0, 0, false
	}
	x := unfmix(binary.BigEndian.Uint64(b)) ^ splitmix(seed)
	return byte(x >> 60), int32(x >> 20 & (1<<40 - 1)), int32(x & (1<<20 - 1)), true
}

const (
	m1 = 0xbf58476d1ce4e5b9
	m2 = 0x94d049bb133111eb
)

// fmix is splitmix64's finaliser, a bijection on uint64.
func fmix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * m1
	z = (z ^ (z >> 27)) * m2
	return z ^ (z >> 31)
}

func unfmix(z uint64) uint64 {
	z = unshift(z, 31)
	z *= inverse(m2)
	z = unshift(z, 27)
	z *= inverse(m1)
	return unshift(z, 30)
}

// unshift inverts z ^= z >> s.
func unshift(z uint64, s uint) uint64 {
	x := z
	for range 64/s + 1 {
		x = z ^ x>>s
	}
	return x
}

// inverse is the inverse of odd a modulo 2^64 (Newton's iteration).
func inverse(a uint64) uint64 {
	x := a
	for range 6 {
		x *= 2 - a*x
	}
	return x
}

func splitmix(x uint64) uint64 { return fmix(x + 0x9e3779b97f4a7c15) }

// Truth is what the scorer needs to know of a generated run.
type Truth struct {
	p     Params
	perm  [][]int32
	recv  map[int32][]int64
	Texts int // texts delivered
}

// Handle is user u's handle.
func Handle(u int32) string { return "u" + strconv.Itoa(int(u)) }

func userOf(h string) (int32, bool) {
	if len(h) < 2 || h[0] != 'u' {
		return 0, false
	}
	n, err := strconv.Atoi(h[1:])
	if err != nil {
		return 0, false
	}
	return int32(n), true
}

// Intro is user u's intro mailbox (in naive mode its only one).
func (t *Truth) Intro(u int32) string { return mailboxID(t.p.Seed, 1, u, 0) }

// Identities is the attacker's public knowledge: handle -> intro mailbox.
func (t *Truth) Identities() map[string]string {
	m := make(map[string]string, t.p.Users)
	for u := range t.p.Users {
		m[Handle(int32(u))] = t.Intro(int32(u))
	}
	return m
}

// HotHandles are the targets: users with a hot conversation.
func (t *Truth) HotHandles() []string {
	var h []string
	for u := range 2 * t.p.Hot {
		h = append(h, Handle(int32(u)))
	}
	return h
}

// HotConvMailboxes are the mailboxes the hot users read their hot
// conversation on (for mailbox-level figures).
func (t *Truth) HotConvMailboxes() []string {
	var m []string
	for u := range 2 * t.p.Hot {
		if t.p.PerConvMailboxes {
			m = append(m, mailboxID(t.p.Seed, 2, int32(u), int32(t.p.Contacts)))
		} else {
			m = append(m, t.Intro(int32(u)))
		}
	}
	return m
}

// Owner is the handle of the user who reads mailbox m.
func (t *Truth) Owner(m string) (string, bool) {
	role, u, j, ok := ownerOf(t.p.Seed, m)
	if !ok || u < 0 || int(u) >= t.p.Users || (role != 1 && role != 2) || int(j) > t.p.Contacts {
		return "", false
	}
	return Handle(u), true
}

// Contact reports whether handles a and b share a conversation.
func (t *Truth) Contact(a, b string) bool {
	u, ok1 := userOf(a)
	v, ok2 := userOf(b)
	if !ok1 || !ok2 || u == v {
		return false
	}
	if int(u) < 2*t.p.Hot && v == u^1 {
		return true
	}
	for _, pm := range t.perm {
		if pm[u] == v {
			return true
		}
	}
	return false
}

// Received is the times at which handle h was delivered a text, sorted.
func (t *Truth) Received(h string) []int64 {
	u, ok := userOf(h)
	if !ok {
		return nil
	}
	r := t.recv[u]
	sort.Slice(r, func(i, j int) bool { return r[i] < r[j] })
	return r
}
