package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Cover traffic. While following in cover mode the client sends at a
// constant Poisson rate whatever the user does: at each tick (exponential
// gaps with mean 1/Rate) it sends the next envelope of the outbox, and
// when the outbox has nothing to send it first queues a dummy message.
// Real envelopes then leave only at ticks, never at once on Send, and
// mailboxes are fetched every FetchEvery instead of by push, so the times
// of what the client sends and fetches do not depend on its real traffic.
//
// A dummy is built to look to the server like a real message on
// everything it sees (docs/user-guide.md §8 argues it field by field):
//
//   - it is a conversation message of kind cover (docs/protocol.md
//     §11.1), encrypted in the conversation's MLS group and fanned out to
//     every other member's mailbox in the same order as a text, so a
//     dummy to a group is a burst of one envelope per member like a real
//     group message, and it goes to the mailboxes real messages go to;
//   - its conversation is drawn with weights that follow the user's own
//     recent real messages per conversation (coverTraffic), so dummies go
//     where real traffic goes, as often;
//   - its filler gives it the body length of one of the conversation's
//     last real messages, so its envelopes fall in the buckets real ones
//     fall in;
//   - it enters the one outbox and leaves through the same code as a real
//     message: same connection (the cover connection, which in cover mode
//     carries every send and nothing else), same sealing, a token from
//     the same wallet, one envelope per tick, sealed before its tick by
//     the same preparer (below), so the tick's timing cannot tell them
//     apart. The outbox is first in, first out, so a burst (real or
//     dummy) is never cut by another;
//   - its recipients process it like a text (MLS decryption, the sender
//     checked against key transparency, its sequence number tracked, its
//     checkpoint gossiped, the group state saved, the envelope acked) and
//     only then drop it, so their fetches and acks do not differ; and a
//     dummy the server drops shows as a gap like a dropped text.
//
// A user with no conversation has nothing to cover: its ticks send
// nothing until it has one.

// CoverOptions configure cover mode.
type CoverOptions struct {
	Rate       float64       `json:"rate"`        // envelopes per second, > 0
	FetchEvery time.Duration `json:"fetch_every"` // default 30 s
}

func (o CoverOptions) withDefaults() CoverOptions {
	if o.FetchEvery <= 0 {
		o.FetchEvery = 30 * time.Second
	}
	return o
}

// connCover is the role of the connection that carries every send in
// cover mode, real and dummy alike, and nothing else.
const connCover = "cover"

var (
	keyCover = []byte("cover")
	// keyCoverMailbox held the cover mailbox of earlier versions, whose
	// dummies went to a mailbox of the sender's own (forgetCoverMailbox).
	keyCoverMailbox = []byte("cover-mailbox")
)

// CoverQuotaShare is the largest share of the account's token quota that
// SetCover lets dummies alone take. The rest is for what the user does:
// real messages beyond the cover schedule's slots, one-time KeyPackage
// fetches and mailbox creation each spend a token too.
const CoverQuotaShare = 0.8

// CoverQuotaError is SetCover's refusal of a rate whose dummies alone would
// take more than CoverQuotaShare of the account's token quota per epoch.
type CoverQuotaError struct {
	Rate    float64                   // the refused rate, envelopes per second
	Quota   protocol.TokenQuotaStatus // the server's answer
	MaxRate float64                   // the largest rate that fits, as MaxCoverRate
}

func (e *CoverQuotaError) Error() string {
	advice := fmt.Sprintf("choose at most %g/s", e.MaxRate)
	if e.MaxRate <= 0 {
		advice = "this quota leaves no room for cover traffic"
	}
	return fmt.Sprintf("cover at %g/s spends %s tokens a day; this server issues %s, and cover may use at most %.0f %% of them: %s",
		e.Rate, protocol.Thousands(e.Rate*86400), e.Quota, CoverQuotaShare*100, advice)
}

// MaxCoverRate is the largest cover rate, in envelopes per second, whose
// dummies take at most CoverQuotaShare of q's quota per epoch, rounded
// down to two significant digits so that it reads well and still fits.
func MaxCoverRate(q protocol.TokenQuotaStatus) float64 {
	if q.EpochLength <= 0 || q.Quota <= 0 {
		return 0
	}
	exact := CoverQuotaShare * float64(q.Quota) / q.EpochLength.Seconds()
	if exact >= 100 {
		return 100 // SetCover's ceiling
	}
	unit := math.Pow(10, math.Floor(math.Log10(exact))-1)
	// Rounded through its decimal form, so that what %g prints and the
	// CLI parses back is exactly r; binary rounding can land a hair above
	// exact, then one step down fits.
	short := func(x float64) float64 {
		v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 2, 64), 64)
		return v
	}
	r := short(math.Floor(exact/unit+1e-9) * unit)
	for r > 0 && !coverFits(r, q) {
		r = short(r - unit)
	}
	return max(r, 0)
}

// coverFits reports whether dummies at rate take at most CoverQuotaShare
// of q's quota in one epoch.
func coverFits(rate float64, q protocol.TokenQuotaStatus) bool {
	return rate*q.EpochLength.Seconds() <= CoverQuotaShare*float64(q.Quota)*(1+1e-12)
}

// CoverCheck is what SetCover learnt about the rate it stored.
type CoverCheck struct {
	// Quota is the server's answer, nil when it was not asked (cover
	// off, or Unchecked).
	Quota *protocol.TokenQuotaStatus
	// Unchecked says why a rate was stored without the quota check: no
	// live session, or the server could not be asked. Empty otherwise.
	Unchecked string
}

// SetCover stores the cover setting used by Follow (and shown by Status)
// when Options.Cover is nil; nil or a rate of 0 turns it off.
//
// With a live session it first asks the server for the account's token
// quota and refuses, with a *CoverQuotaError, a rate whose dummies alone
// would take more than CoverQuotaShare of it per epoch: cover traffic
// that runs the quota dry starves every real message. Without a session,
// or when the server cannot be asked, it stores the rate unchecked and
// says why in CoverCheck.Unchecked; log in and set it again to check.
// SetCoverUnchecked stores a rate without asking.
func (c *Client) SetCover(ctx context.Context, o *CoverOptions) (CoverCheck, error) {
	if err := checkCoverRate(o); err != nil {
		return CoverCheck{}, err
	}
	c.op.Lock()
	defer c.op.Unlock()
	if o == nil || o.Rate == 0 {
		return CoverCheck{}, c.storeCover(nil)
	}
	check, err := c.checkCoverQuota(ctx, o.Rate)
	if err != nil {
		return check, err
	}
	return check, c.storeCover(o)
}

// CheckCover checks rate against the account's token quota as SetCover
// does, storing nothing: for cover given per run (`qpc recv --follow
// --cover`) rather than as the stored setting. FollowCover itself does
// not check, so that a caller can run a rate above the share on purpose.
func (c *Client) CheckCover(ctx context.Context, rate float64) (CoverCheck, error) {
	if err := checkCoverRate(&CoverOptions{Rate: rate}); err != nil {
		return CoverCheck{}, err
	}
	c.op.Lock()
	defer c.op.Unlock()
	return c.checkCoverQuota(ctx, rate)
}

// SetCoverUnchecked stores the cover setting like SetCover without asking
// the server's quota: for a rate above CoverQuotaShare on purpose, as for
// cover that follows only part of the day (`qpc cover --force`).
func (c *Client) SetCoverUnchecked(o *CoverOptions) error {
	if err := checkCoverRate(o); err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	return c.storeCover(o)
}

func checkCoverRate(o *CoverOptions) error {
	if o != nil && (o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) || o.Rate > 100) {
		return fmt.Errorf("cover rate: between 0 and 100 envelopes per second")
	}
	return nil
}

// checkCoverQuota asks the server for the account's token quota and
// refuses rate if its dummies would take more than CoverQuotaShare. The
// caller holds c.op.
func (c *Client) checkCoverQuota(ctx context.Context, rate float64) (CoverCheck, error) {
	s := c.prof.Session
	if s == nil || !c.opts.Now().Before(s.Expiry) {
		return CoverCheck{Unchecked: "not logged in"}, nil
	}
	q, err := c.accountQuota(ctx, s)
	if err != nil {
		if ctx.Err() != nil {
			return CoverCheck{}, err
		}
		return CoverCheck{Unchecked: "could not ask the server: " + err.Error()}, nil
	}
	check := CoverCheck{Quota: &q}
	if !coverFits(rate, q) {
		return check, &CoverQuotaError{Rate: rate, Quota: q, MaxRate: MaxCoverRate(q)}
	}
	return check, nil
}

// accountQuota asks for the token quota on the account's connection, the
// one that carries the session anyway. The caller holds c.op.
func (c *Client) accountQuota(ctx context.Context, s *protocol.Session) (protocol.TokenQuotaStatus, error) {
	defer c.closeAccount()
	acct, err := c.conn(ctx, connAccount)
	if err != nil {
		return protocol.TokenQuotaStatus{}, err
	}
	return acct.TokenQuota(ctx, s)
}

// storeCover writes the setting; nil or a rate of 0 deletes it. The
// caller holds c.op.
func (c *Client) storeCover(o *CoverOptions) error {
	return c.store.Update(func(tx *state.Tx) error {
		if o == nil || o.Rate == 0 {
			err := tx.Delete(bucketSettings, keyCover)
			if errors.Is(err, state.ErrNoEntry) {
				err = nil
			}
			return err
		}
		return putJSON(tx, bucketSettings, keyCover, o.withDefaults())
	})
}

// coverMode is the cover configuration in force, or nil when off.
func (c *Client) coverMode() *CoverOptions {
	if o := c.opts.Cover; o != nil {
		if o.Rate <= 0 {
			return nil
		}
		v := o.withDefaults()
		return &v
	}
	var o CoverOptions
	err := c.store.View(func(tx *state.Tx) error { return getJSON(tx, bucketSettings, keyCover, &o) })
	if err != nil || o.Rate <= 0 {
		return nil
	}
	o = o.withDefaults()
	return &o
}

// forgetCoverMailbox deletes the cover mailbox of an earlier version, if
// there is one, on the server (on the connection that created it) and
// locally: dummies no longer go there. Best effort: a mailbox the server
// cannot delete now only stays until its envelopes expire.
func (c *Client) forgetCoverMailbox(ctx context.Context) error {
	var mb mailboxRecord
	err := c.store.View(func(tx *state.Tx) error { return getJSON(tx, bucketSettings, keyCoverMailbox, &mb) })
	if errors.Is(err, state.ErrNoEntry) {
		return nil
	}
	if err == nil {
		if conn, cerr := c.conn(ctx, connCover); cerr == nil {
			if derr := conn.DeleteMailbox(ctx, mb.mailbox()); derr != nil {
				c.log.Debug("deleting the old cover mailbox", "err", derr)
			}
		}
	}
	return c.store.Update(func(tx *state.Tx) error { return tx.Delete(bucketSettings, keyCoverMailbox) })
}

// coverTraffic is what a conversation's dummies imitate: the user's own
// real messages in it (kept in its convRecord).
type coverTraffic struct {
	// Sizes are the body lengths (docs/protocol.md §11.1) of the last
	// coverSizes real messages, oldest first.
	Sizes []int `json:"sizes,omitempty"`
	// Weight counts real messages, decayed with half-life
	// coverHalfLife up to At.
	Weight float64   `json:"weight,omitempty"`
	At     time.Time `json:"at,omitzero"`
}

const (
	// coverSizes is how many real body lengths a conversation keeps.
	coverSizes = 32
	// coverHalfLife is how fast a conversation's weight forgets.
	coverHalfLife = 3 * 24 * time.Hour
	// coverPrior is the weight every conversation has even without real
	// messages, so that a quiet one gets some dummies too and its first
	// real message in a while does not stand out.
	coverPrior = 0.05
	// coverDefaultBody is a dummy's body length while no real message
	// was sent yet: a short text.
	coverDefaultBody = 48
	// messageFixed is the length of a §11.1 Message without checkpoint
	// and body: version, kind, id, seq, sent_at, and the two length
	// prefixes.
	messageFixed = 1 + 1 + content.IDSize + 8 + 8 + 2 + 3
)

// weight is t's decayed weight at now.
func (t *coverTraffic) weight(now time.Time) float64 {
	if t == nil || t.Weight == 0 {
		return 0
	}
	age := now.Sub(t.At)
	if age <= 0 {
		return t.Weight
	}
	return t.Weight * math.Exp2(-age.Hours()/coverHalfLife.Hours())
}

// noteReal records a real message of the given encoded length (the whole
// §11.1 Message) with checkpoint length cp that we sent in r: it is what
// r's dummies imitate. Called as the message is encrypted; r is saved
// with the message.
func (r *convRecord) noteReal(encoded, cp int, now time.Time) {
	t := r.Traffic
	if t == nil {
		t = new(coverTraffic)
		r.Traffic = t
	}
	t.Weight = t.weight(now) + 1
	t.At = now
	t.Sizes = append(t.Sizes, max(encoded-messageFixed-cp, 0))
	if len(t.Sizes) > coverSizes {
		t.Sizes = slices.Delete(t.Sizes, 0, len(t.Sizes)-coverSizes)
	}
}

// coverTarget draws the conversation of the next dummy and its body
// length: a conversation with a member to send to, with probability
// proportional to its weight plus coverPrior; a body length drawn from its
// recent real ones (from all conversations' if it has none yet). nil when
// there is no such conversation.
func (c *Client) coverTarget() (*convRecord, int, error) {
	convs, err := c.allConvs()
	if err != nil {
		return nil, 0, err
	}
	now := c.opts.Now()
	var (
		cands   []*convRecord
		weights []float64
		total   float64
		sizes   []int
	)
	for _, r := range convs {
		if !r.Active || r.Left || len(r.Members) == 0 || r.Group == nil {
			continue
		}
		w := r.Traffic.weight(now) + coverPrior
		cands = append(cands, r)
		weights = append(weights, w)
		total += w
		if r.Traffic != nil {
			sizes = append(sizes, r.Traffic.Sizes...)
		}
	}
	if len(cands) == 0 {
		return nil, 0, nil
	}
	x := mrand.Float64() * total
	r := cands[len(cands)-1]
	for i, w := range weights {
		if x < w {
			r = cands[i]
			break
		}
		x -= w
	}
	if r.Traffic != nil && len(r.Traffic.Sizes) > 0 {
		sizes = r.Traffic.Sizes
	}
	n := coverDefaultBody
	if len(sizes) > 0 {
		n = sizes[mrand.IntN(len(sizes))]
	}
	return r, n, nil
}

// queueDummy queues one dummy message as sendContent queues a text. It
// reports false when there is no conversation to send one to. The caller
// holds c.op.
func (c *Client) queueDummy(ctx context.Context) (bool, error) {
	r, n, err := c.coverTarget()
	if err != nil || r == nil {
		return false, err
	}
	m := &content.Message{Kind: content.KindCover, Filler: make([]byte, min(n, content.MaxBody))}
	if err := c.sendContent(ctx, r, m); err != nil {
		return false, fmt.Errorf("queueing a dummy: %w", err)
	}
	return true, nil
}

// sealEstimate seals random content of a short text's length (an MLS
// message carrying our checkpoint) to a throwaway key: the envelope most
// dummies and texts fill, for Status.
func (c *Client) sealEstimate(policy padding.Policy) ([]byte, error) {
	sk, err := sealed.GenerateMailboxKey()
	if err != nil {
		return nil, err
	}
	pp, err := sealed.PlaintextPolicy(policy, tokens.TokenSize)
	if err != nil {
		return nil, err
	}
	body := make([]byte, 240+len(c.checkpoint()))
	rand.Read(body)
	var id wire.ID
	return sealed.Seal(pp, sk.Public(), id, sealed.SenderIdentity{Key: c.prof.IdentityKey, Handle: c.prof.Handle}, sealed.ContentMLS, body, c.opts.Now())
}

// The schedule and the work are apart, in three goroutines:
//
//   - the ticks (coverSchedule) only write an envelope sealed before them:
//     no lock, no work that depends on what is sent, so a send's time on
//     the wire is its Poisson draw whatever the envelope is;
//   - the fast lane (coverFast) takes each tick's answer and seals the next
//     entry of the outbox into the one-envelope slot the next tick takes,
//     at most coverLead before that tick. It reads the outbox and writes
//     only its own entries' deletions, through the state store's
//     transactions, and does not take the client's lock (c.op), so no
//     other work can hold it up. The slot stays empty until the answer is
//     in, so entries to one destination still leave in order, one at a
//     time. Only what should not happen in a steady run goes the slow way
//     under c.op: an entry without a token yet, an error, an outbox with
//     nothing to send;
//   - the slow lane (coverSlow), woken after each fill, does the work that
//     needs c.op: it moves due receipts into the outbox, tops the outbox up
//     with dummy messages until at least coverAhead envelopes wait behind
//     the slot, and gives the waiting entries their tokens. Building a
//     dummy (an MLS encryption and a state write) therefore happens ticks
//     before the dummy leaves, and it holds up neither a tick nor the next
//     fill, just as a real message's encryption in Send does not.
//
// A tick whose slot is still empty sends nothing; the envelope waits for
// the next tick. Before this split a tick sealed its envelope, released
// due receipts and built the next dummy all while holding c.op, and the
// server could see it in the gaps between sends: a tick delayed by
// building a dummy, or by a fetch or a Send holding the lock, was more
// often a dummy's; the send right after acking a text came later than
// after acking a dummy, the receipt for the text being encrypted in the
// tick (TestHostileCoverClassifier).
const (
	// coverLead is how long before its tick the fast lane seals the next
	// envelope (at once when the tick is nearer), so that the envelope's
	// sealed timestamp stays near its send.
	coverLead = 2 * time.Second
	// coverAhead is how many envelopes the slow lane keeps queued behind
	// the slot.
	coverAhead = 2
	// maxCoverBacklog bounds the dummies in the outbox: while their
	// destinations cannot be reached (a member's mailbox not known yet),
	// the slow lane would otherwise queue new ones each time.
	maxCoverBacklog = 64
)

// coverEnvelope is an outbox entry sealed for the next tick.
type coverEnvelope struct {
	seq      uint64
	e        *outboxEntry
	env, tok []byte
}

// coverResult is a tick's outcome for the envelope it sent; spent: its
// token was shown (Conn.SendPaid).
type coverResult struct {
	p     *coverEnvelope
	err   error
	spent bool
}

// coverScan walks the outbox in the order flush sends it and returns the
// first entry that can be sent now, apart from the entry skip (the one in
// the slot, 0: none), and how many further entries could be sent after it.
// It only reads the state, and deletes entries whose conversation or member
// is gone: it needs no lock.
func (c *Client) coverScan(skip uint64) (seq uint64, first *outboxEntry, behind int, err error) {
	type item struct {
		seq uint64
		e   *outboxEntry
	}
	var items []item
	err = c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketOutbox, 0, func(seq uint64, v []byte) error {
			if seq == skip || c.retiring.has(seq) {
				return nil
			}
			e := new(outboxEntry)
			if err := jsonUnmarshal(v, e); err != nil {
				return err
			}
			items = append(items, item{seq, e})
			return nil
		})
	})
	if err != nil {
		return 0, nil, 0, err
	}
	blocked := map[string]bool{}
	for _, it := range items {
		ok, wait, err := c.resolveEntry(it.seq, it.e)
		if err != nil {
			return 0, nil, 0, err
		}
		if wait {
			blocked[it.e.dest()] = true
		}
		if !ok || blocked[it.e.dest()] {
			continue
		}
		if first == nil {
			seq, first = it.seq, it.e
		} else {
			behind++
		}
	}
	return seq, first, behind, nil
}

// coverFillFast seals the outbox's next entry without c.op, when that
// entry has its token already; skip is an entry already sent, not yet
// deleted. It only reads the state (a read transaction waits for no
// writer). nil when it cannot: then coverFill.
func (c *Client) coverFillFast(ctx context.Context, id sealed.SenderIdentity, skip uint64) *coverEnvelope {
	seq, e, _, err := c.coverScan(skip)
	if err != nil || e == nil {
		return nil
	}
	var tok []byte
	err = c.store.View(func(tx *state.Tx) error {
		t, err := tx.Get(bucketOutboxTokens, seqKey(seq))
		tok = t
		return err
	})
	if err != nil || tok == nil {
		return nil
	}
	conn, err := c.conn(ctx, connCover)
	if err != nil {
		return nil
	}
	to, err := sealed.ParseMailboxPublicKey(e.Sealing)
	if err != nil {
		return nil
	}
	policy, err := sealed.PlaintextPolicy(c.connPolicy(conn), len(tok))
	if err != nil {
		return nil
	}
	env, err := sealed.Seal(policy, to, e.SendID, id, e.Type, e.Payload, c.opts.Now())
	if err != nil {
		return nil
	}
	return &coverEnvelope{seq: seq, e: e, env: env, tok: tok}
}

// coverFill seals the next envelope for the slot the slow way, when
// coverFillFast could not: the first entry of the outbox that can be sent,
// with a token taken now, or a dummy built now when there is none (at the
// start, or while every destination is out of reach). nil when there is
// nothing to send. skip is as for coverFillFast. The caller holds c.op.
func (c *Client) coverFill(ctx context.Context, skip uint64) (*coverEnvelope, error) {
	seq, e, _, err := c.coverScan(skip)
	if err != nil {
		return nil, err
	}
	if e == nil {
		if queued, err := c.queueDummyBounded(ctx); err != nil || !queued {
			return nil, err
		}
		if seq, e, _, err = c.coverScan(skip); err != nil || e == nil {
			return nil, err
		}
	}
	conn, err := c.conn(ctx, connCover)
	if err != nil {
		return nil, err
	}
	env, tok, err := c.sealEntry(ctx, conn, seq, e)
	if err != nil {
		return nil, err
	}
	return &coverEnvelope{seq: seq, e: e, env: env, tok: tok}, nil
}

// coverTopUp queues dummy messages until at least coverAhead envelopes can
// be sent after the one in the slot (seq, 0: none). The caller holds c.op.
func (c *Client) coverTopUp(ctx context.Context, seq uint64) error {
	for range coverAhead {
		first, behind := 0, 0
		_, e, n, err := c.coverScan(seq)
		if err != nil {
			return err
		}
		if e != nil {
			first, behind = 1, n
		}
		if first+behind >= coverAhead {
			return nil
		}
		if queued, err := c.queueDummyBounded(ctx); err != nil || !queued {
			return err
		}
	}
	return nil
}

// queueDummyBounded is queueDummy while fewer than maxCoverBacklog dummies
// wait. The caller holds c.op.
func (c *Client) queueDummyBounded(ctx context.Context) (bool, error) {
	_, dummies, err := c.outboxCount()
	if err != nil || dummies >= maxCoverBacklog {
		return false, err
	}
	return c.queueDummy(ctx)
}

// coverSend writes p on the cover connection: the only work of a tick.
// Like flush, it pays with p's token only when the connection has no
// Sends left of a token it showed (Conn.SendPaid): every Send of cover
// mode, dummy or real, goes on this one connection, so the allowance
// links nothing the connection does not.
func (c *Client) coverSend(ctx context.Context, p *coverEnvelope) (spent bool, err error) {
	conn, err := c.conn(ctx, connCover)
	if err != nil {
		return false, err
	}
	_, spent, err = conn.SendPaid(ctx, p.e.SendID, p.e.ID, p.env, p.tok)
	if spent {
		c.unshown.shown(p.seq)
	}
	return spent, err
}

// coverSchedule runs the ticks: at each it sends what is in the slot, if
// anything, and reports the outcome on done (an envelope's answer; done
// has room for the one envelope in flight) or wake (an empty tick). next
// holds the time of the coming tick, for the fast lane's lead.
func (c *Client) coverSchedule(ctx context.Context, rate float64, slot <-chan *coverEnvelope, done chan<- coverResult, wake chan<- struct{}, next *atomic.Int64) {
	// Ticks are placed on an absolute schedule, so a slow send delays one
	// tick but does not shift the ones after it.
	at := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		at = at.Add(expGap(rate))
		next.Store(at.UnixNano())
		t.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case p := <-slot:
			spent, err := c.coverSend(ctx, p)
			select {
			case done <- coverResult{p, err, spent}:
			case <-ctx.Done():
				return // the entry stays queued; a resend carries the same ID
			}
		default:
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
}

// coverLanes is what the fast and the slow lane share.
type coverLanes struct {
	rate     float64
	id       sealed.SenderIdentity
	slot     chan *coverEnvelope
	done     chan coverResult
	wake     chan struct{} // an empty tick
	kick     chan struct{} // the slow lane has work
	next     atomic.Int64  // the coming tick, Unix nanoseconds
	inFlight atomic.Uint64 // the entry in the slot or on the wire, 0: none
	emit     func([]Event)
}

// coverFast is the fast lane: it takes the ticks' answers and fills the
// slot, without c.op but in the rare cases coverFill and coverFailed
// name. An envelope the server stored is deleted from the outbox only
// once the next one is in the slot: the deletion is a write transaction,
// which may wait for the slow lane's.
func (c *Client) coverFast(ctx context.Context, l *coverLanes) {
	var (
		out  quotaOut
		sent uint64 // stored by the server, still in the outbox
		free bool   // sent's token was not needed (spare.go)
	)
	lead := time.NewTimer(0)
	defer lead.Stop()
	forget := func() {
		if sent != 0 {
			seq, f := sent, free
			c.store.Update(func(tx *state.Tx) error { return retire(tx, seq, f) })
			sent, free = 0, false
		}
	}
	for {
		if l.inFlight.Load() == 0 && !out.wait(c.opts.Now()) {
			if d := time.Until(time.Unix(0, l.next.Load())) - coverLead; d > 0 {
				forget()
				lead.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-lead.C:
				}
			}
			var (
				err error
				ev  []Event
			)
			p := c.coverFillFast(ctx, l.id, sent)
			if p == nil {
				c.op.Lock()
				c.pending = nil
				p, err = c.coverFill(ctx, sent)
				ev = c.takeEvents()
				c.op.Unlock()
			}
			if p != nil {
				l.inFlight.Store(p.seq)
				l.slot <- p // room: nothing was in flight
			}
			forget()
			if w, ok := out.observe(c.opts.Now(), err, l.rate); ok {
				ev = append(ev, w)
			}
			l.emit(ev)
			if err != nil && ctx.Err() == nil {
				c.log.Debug("cover: sealing the next envelope", "err", err)
			}
			select {
			case l.kick <- struct{}{}:
			default:
			}
		}
		forget()
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case r := <-l.done:
			if r.err == nil {
				sent = r.p.seq
				free = !r.spent && c.unshown.free(sent)
				c.sentEntry(r.p.seq, r.p.e, time.Time{}, nil) // reports it sent
			} else if err := c.coverFailed(r, l.emit); ctx.Err() == nil {
				c.log.Debug("cover tick", "err", err)
			}
			l.inFlight.Store(0)
		}
	}
}

// coverFailed takes a tick's failed attempt under c.op as flush does; the
// entry stays in the outbox for the next fill, or is dropped with an alarm
// when it cannot be delivered.
func (c *Client) coverFailed(r coverResult, emit func([]Event)) error {
	c.op.Lock()
	c.pending = nil
	err := c.sentEntry(r.p.seq, r.p.e, time.Time{}, r.err)
	ev := c.takeEvents()
	c.op.Unlock()
	emit(ev)
	return fmt.Errorf("%w: %w", ErrQueued, err)
}

// coverSlow is the slow lane: woken after each fill, and at least at every
// tick that found the slot empty, it does under c.op the work that needs
// the lock.
func (c *Client) coverSlow(ctx context.Context, l *coverLanes) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		}
		c.op.Lock()
		c.pending = nil
		if err := c.releaseReceipts(ctx); err != nil && ctx.Err() == nil {
			c.log.Debug("cover: releasing receipts", "err", err)
		}
		err := c.coverTopUp(ctx, l.inFlight.Load())
		if err == nil {
			err = c.assignTokens(ctx, coverAhead+1)
		}
		ev := c.takeEvents()
		c.op.Unlock()
		l.emit(ev)
		if err != nil && ctx.Err() == nil {
			c.log.Debug("cover: queueing dummies", "err", err)
		}
	}
}

// quotaRetry is how often cover mode asks for tokens again once the
// account's quota for the epoch is used up: every ask is a request on the
// account's session, so asking at the cover rate would show the server
// that rhythm for nothing.
const quotaRetry = time.Minute

// quotaOut follows whether cover ticks fail because the account's token
// quota for this epoch is used up. The user is told once when that starts,
// with the cost of the rate, and once when tokens come again; in between
// real messages wait in the outbox and no dummy goes out, which an
// observer sees as silence.
type quotaOut struct {
	since, tried time.Time // zero when tokens were last available
}

// wait reports whether to skip this tick: out of quota and asked less
// than quotaRetry ago.
func (q *quotaOut) wait(now time.Time) bool {
	return !q.since.IsZero() && now.Sub(q.tried) < quotaRetry
}

// observe takes a tick's outcome and returns the warning to show, if the
// state changed.
func (q *quotaOut) observe(now time.Time, err error, rate float64) (Event, bool) {
	if errors.Is(err, &wire.Error{Code: wire.CodeQuota}) {
		q.tried = now
		if !q.since.IsZero() {
			return Event{}, false
		}
		q.since = now
		return Event{Kind: EventWarning, At: now, Text: fmt.Sprintf(
			"cover traffic paused: this account's delivery-token quota on the server is used up for the current token epoch "+
				"(cover at %g envelopes/s spends %.0f tokens a day); queued messages wait until tokens can be had again. "+
				"Lower the rate (qpc cover <rate>) or ask the server's operator about token_quota", rate, rate*86400)}, true
	}
	if err != nil || q.since.IsZero() {
		return Event{}, false
	}
	q.since, q.tried = time.Time{}, time.Time{}
	return Event{Kind: EventWarning, At: now, Text: "cover traffic resumed: delivery tokens are available again"}, true
}

// expGap draws an exponential gap with the given rate per second.
func expGap(rate float64) time.Duration {
	return time.Duration(-math.Log1p(-mrand.Float64()) / rate * float64(time.Second))
}

// followCover is Follow in cover mode.
func (c *Client) followCover(ctx context.Context, fn func(Event), o CoverOptions) error {
	var fnMu sync.Mutex
	emit := func(ev []Event) {
		fnMu.Lock()
		defer fnMu.Unlock()
		for _, e := range ev {
			fn(e)
		}
	}
	ev, err := c.Sync(ctx)
	emit(ev)
	if err != nil {
		return err
	}
	c.op.Lock()
	err = c.forgetCoverMailbox(ctx)
	c.op.Unlock()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	c.op.Lock()
	l := &coverLanes{
		rate: o.Rate,
		id:   sealed.SenderIdentity{Key: c.prof.IdentityKey, Handle: c.prof.Handle},
		slot: make(chan *coverEnvelope, 1), done: make(chan coverResult, 1),
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		emit: emit,
	}
	c.op.Unlock()
	l.next.Store(time.Now().UnixNano())
	wg.Add(3)
	go func() {
		defer wg.Done()
		c.coverSchedule(ctx, o.Rate, l.slot, l.done, l.wake, &l.next)
	}()
	go func() {
		defer wg.Done()
		c.coverFast(ctx, l)
	}()
	go func() {
		defer wg.Done()
		c.coverSlow(ctx, l)
	}()
	tick := time.NewTicker(o.FetchEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		ev, err := c.Sync(ctx)
		emit(ev)
		if err != nil && ctx.Err() == nil {
			c.log.Debug("cover fetch", "err", err)
		}
	}
}

// CoverStatus is the cost of cover mode, for `qpc status`.
type CoverStatus struct {
	On           bool          `json:"on"`
	Rate         float64       `json:"rate,omitempty"`           // envelopes per second
	FetchEvery   time.Duration `json:"fetch_every,omitempty"`    // the fetch period
	Envelope     int           `json:"envelope_bytes,omitempty"` // the record bucket a short text or dummy fills
	TokensPerDay float64       `json:"tokens_per_day,omitempty"` // Rate × 86400
	BytesPerDay  float64       `json:"bytes_per_day,omitempty"`  // Rate × Envelope × 86400
	// QuotaShare is the share of the account's token quota the dummies
	// alone take (Rate × epoch length / quota), when the quota is known;
	// SetCover allows at most CoverQuotaShare.
	QuotaShare float64 `json:"quota_share,omitempty"`
}

// coverStatus computes the cover mode's cost under the server's record
// policy.
func (c *Client) coverStatus(policy padding.Policy) CoverStatus {
	o := c.coverMode()
	if o == nil {
		return CoverStatus{}
	}
	st := CoverStatus{On: true, Rate: o.Rate, FetchEvery: o.FetchEvery, TokensPerDay: o.Rate * 86400}
	if env, err := c.sealEstimate(policy); err == nil {
		st.Envelope, _ = policy.Bucket(len(env))
	}
	st.BytesPerDay = st.TokensPerDay * float64(st.Envelope)
	return st
}

// FollowCover is Follow in cover mode with o for this client (as if
// Options.Cover were o), whatever the stored setting.
func (c *Client) FollowCover(ctx context.Context, o CoverOptions, fn func(Event)) error {
	if err := c.RefillIfEmpty(ctx); err != nil { // token refills: tokenkeys.go
		c.log.Debug("refill", "err", err)
	}
	defer c.StartRefills(ctx)()
	if o.Rate <= 0 || o.Rate > 100 || math.IsNaN(o.Rate) {
		return fmt.Errorf("cover rate: between 0 and 100 envelopes per second")
	}
	o = o.withDefaults()
	c.op.Lock()
	c.opts.Cover = &o
	c.op.Unlock()
	return c.followCover(ctx, fn, o)
}
