package client

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/wire"
)

// The outbox. Every envelope to send is first written to the local state
// with a message ID chosen once; sending is retried with the same ID (and
// the same token) until the server acknowledges, and the server stores a
// retried ID once. Entries to one destination leave in order, one at a
// time, so a member receives a sender's messages in the order they were
// written. An entry for a member that has not announced its conversation
// mailbox yet goes to the member's intro mailbox, after the Welcome.
// The payload is sealed afresh at each attempt (the envelope's timestamp
// must be recent); the MLS message inside is fixed when it is queued.

// outboxEntry is one envelope waiting to go out.
type outboxEntry struct {
	Conv    []byte
	To      string // the member's handle
	Intro   bool   // to the member's intro mailbox (a Welcome)
	SendID  wire.ID
	Sealing []byte // the destination's sealing public key; nil: not known yet
	Type    sealed.ContentType
	Payload []byte
	ID      wire.MessageID
	Queued  time.Time
	Cover   bool `json:",omitempty"` // a dummy of cover traffic
	// Kind is the content kind of a conversation message (0: a Welcome
	// or handshake message), for Options.SentEnvelope only.
	Kind content.Kind `json:",omitempty"`
}

func (e *outboxEntry) dest() string {
	if e.Sealing == nil {
		return "wait:" + hex.EncodeToString(e.Conv) + ":" + e.To
	}
	return hex.EncodeToString(e.SendID[:])
}

func (c *Client) enqueue(tx *state.Tx, e *outboxEntry) error {
	e.ID = protocol.NewMessageID()
	e.Queued = c.opts.Now()
	_, err := c.enqueueAt(tx, e)
	return err
}

// enqueueAt stores e, whose ID and Queued are set, as it is, and returns
// its sequence number.
func (c *Client) enqueueAt(tx *state.Tx, e *outboxEntry) (uint64, error) {
	raw, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	return tx.Append(bucketOutbox, raw)
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// bucketOutboxTokens holds the token assigned to an outbox entry (by its
// sequence number) at its first attempt, reused by every retry.
const bucketOutboxTokens = "outbox-tokens"

// Pending is the number of real envelopes in the outbox (cover
// traffic's dummies waiting there are not counted). An envelope the
// server has acknowledged is not pending, even while its deletion from
// the outbox is not written yet (retire.go).
func (c *Client) Pending() (int, error) {
	c.op.Lock()
	defer c.op.Unlock()
	real, _, err := c.outboxCount()
	return real, err
}

// outboxCount counts the real envelopes and the dummies in the outbox.
// The caller holds c.op.
func (c *Client) outboxCount() (real, cover int, err error) {
	err = c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketOutbox, 0, func(seq uint64, v []byte) error {
			if c.retiring.has(seq) {
				return nil // sent; its deletion is not written yet (retire.go)
			}
			var e struct{ Cover bool }
			if err := jsonUnmarshal(v, &e); err != nil {
				return err
			}
			if e.Cover {
				cover++
			} else {
				real++
			}
			return nil
		})
	})
	return real, cover, err
}

// Flush tries to send everything in the outbox once.
func (c *Client) Flush(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	return c.flush(ctx)
}

// flush sends what it can. It returns the first error that stopped a
// destination, after trying every destination; the entries stay queued.
func (c *Client) flush(ctx context.Context) error {
	if c.coverMode() != nil {
		return nil // in cover mode, only the Poisson schedule sends (cover.go)
	}
	defer c.timed(TimeSendFlush, time.Now())
	type item struct {
		seq uint64
		e   *outboxEntry
	}
	var items []item
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketOutbox, 0, func(seq uint64, v []byte) error {
			if c.retiring.has(seq) {
				return nil // sent already (retire.go)
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
		return err
	}
	// First-contact connections are one-shot: close them when done.
	defer c.closeConns("first:")
	// Envelopes the server stored are retired at the end: deleted from
	// the outbox by the next transaction the client makes, or on a short
	// timer (retire.go; a crash before it only resends them, under the
	// same message IDs, and the server stores each once). A token an
	// entry did not need (it went out on its connection's allowance)
	// goes to the spare pool in the same transaction (spare.go).
	var sent []uint64
	free := map[uint64]bool{}
	defer func() { c.retireLater(sent, free) }()
	waiting := make([]*outboxEntry, 0, len(items))
	for _, it := range items {
		if it.e.Sealing == nil {
			waiting = append(waiting, it.e)
		}
	}
	c.lookupOneUnreached(ctx, waiting)
	start := time.Now()
	if err := c.assignTokens(ctx, len(items)); err != nil {
		return fmt.Errorf("%w: %w", ErrQueued, err)
	}
	c.timed(TimeSendTokens, start)
	blocked := map[string]bool{}
	var firstErr error
	for _, it := range items {
		e := it.e
		ok, wait, err := c.resolveEntry(it.seq, e)
		if err != nil {
			return err
		}
		if wait {
			blocked[e.dest()] = true
		}
		if !ok {
			continue
		}
		d := e.dest()
		if blocked[d] {
			continue
		}
		unneeded, err := c.sendEntry(ctx, it.seq, e)
		if err == nil {
			sent = append(sent, it.seq)
			free[it.seq] = unneeded
		} else {
			blocked[d] = true
			if firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	if firstErr != nil {
		return fmt.Errorf("%w: %w", ErrQueued, firstErr)
	}
	return nil
}

// lookupOneUnreached looks up, on a connection of its own, one member
// (picked at random) that entries of waiting wait for: a member of a
// conversation that announced no mailbox yet and that is no contact of
// ours, so that nothing is known to send to. A join no longer looks the
// group's members up (ADR 0041), so its announcement to each member
// waits here until either the member's own announcement arrives (and
// names its mailbox) or this lookup gives its intro mailbox; one lookup
// a flush spreads a group's lookups over the syncs that follow the
// join, each at a time of its own, instead of one burst the server
// could read the group off.
func (c *Client) lookupOneUnreached(ctx context.Context, waiting []*outboxEntry) {
	var cands []string
	for _, e := range waiting {
		if e.Conv == nil || slices.Contains(cands, e.To) {
			continue
		}
		r, err := c.getConv(e.Conv)
		if err != nil || r == nil {
			continue
		}
		if m := r.Members[e.To]; m == nil || m.Sealing != nil {
			continue
		}
		if ct, err := c.contact(e.To); err != nil || ct != nil {
			continue
		}
		cands = append(cands, e.To)
	}
	if len(cands) == 0 {
		return
	}
	h := cands[mrand.IntN(len(cands))]
	start := time.Now()
	if _, err := c.lookup(ctx, h, false); err != nil {
		c.log.Debug("kt: a member to reach could not be looked up", "err", err)
		return
	}
	c.log.Debug("kt: looked up a member to reach it", "waiting", len(cands), "took", time.Since(start))
}

// ErrQueued wraps a delivery attempt that failed while the envelope is
// safe in the outbox: the next operation (or Flush) retries it.
var ErrQueued = errors.New("kept in the outbox, to be retried")

// ErrUndeliverable wraps a refusal that retrying cannot fix; the entry is
// dropped and an alarm raised.
var ErrUndeliverable = errors.New("undeliverable")

// resolveEntry fills in the destination of an entry queued before its
// member announced a mailbox: the announced one, or else the member's
// intro mailbox after its Welcome. It reports whether e can be sent now;
// wait is set when it cannot yet (nothing known to send it to), and an
// entry whose conversation or member is gone is dropped.
func (c *Client) resolveEntry(seq uint64, e *outboxEntry) (ok, wait bool, err error) {
	if e.Sealing != nil {
		return true, false, nil
	}
	r, err := c.getConv(e.Conv)
	if err != nil {
		return false, false, err
	}
	if r == nil {
		c.dropEntry(seq)
		return false, false, nil
	}
	m, ok := r.Members[e.To]
	if !ok {
		c.dropEntry(seq) // no longer a member
		return false, false, nil
	}
	if m.Sealing != nil {
		e.SendID, e.Sealing = m.SendID, m.Sealing
		return true, false, nil
	}
	// Not announced yet: until it is, the member's messages follow its
	// Welcome into its intro mailbox (they are part of the first
	// contact), in order after it.
	ct, err := c.contact(e.To)
	if err != nil {
		return false, false, err
	}
	if ct == nil {
		return false, true, nil
	}
	e.SendID, e.Sealing, e.Intro = ct.IntroSendID, ct.IntroKey, true
	return true, false, nil
}

// sendEntry makes one attempt at one entry. The entry's token pays only
// when its connection has no Sends left of a token it showed before
// (Conn.SendPaid); unneeded reports a token that was not needed and was
// never shown, which the pool may take (spare.go).
func (c *Client) sendEntry(ctx context.Context, seq uint64, e *outboxEntry) (unneeded bool, err error) {
	role := connForConv(e.Conv)
	if e.Intro {
		role = connForFirst(e.To)
	}
	// The token first: an entry that cannot be paid for dials nothing.
	// A first-contact connection is dialled afresh at every flush, and
	// an anonymous dial holds the wallet's refill off for a quiet gap
	// (linking.go): a client syncing often with a Welcome waiting for a
	// token would otherwise keep its own refill from ever running.
	if _, err := c.entryToken(ctx, seq); err != nil {
		return false, err
	}
	conn, err := c.conn(ctx, role)
	if err != nil {
		return false, err
	}
	start := time.Now()
	env, tok, err := c.sealEntry(ctx, conn, seq, e)
	if err != nil {
		return false, err
	}
	c.timed(TimeSendSeal, start)
	start = time.Now()
	sent := c.opts.Now()
	_, spent, err := conn.SendPaid(ctx, e.SendID, e.ID, env, tok)
	c.timed(TimeSendWire, start)
	if spent {
		c.unshown.shown(seq)
	}
	if err := c.sentEntry(seq, e, sent, err); err != nil {
		return false, err
	}
	return !spent && c.unshown.free(seq), nil
}

// sealEntry seals e for one attempt on conn, paid with the entry's token.
// An entry that cannot be sealed is dropped, with an alarm.
func (c *Client) sealEntry(ctx context.Context, conn *protocol.Conn, seq uint64, e *outboxEntry) (env, tok []byte, err error) {
	tok, err = c.entryToken(ctx, seq)
	if err != nil {
		return nil, nil, err
	}
	to, err := sealed.ParseMailboxPublicKey(e.Sealing)
	if err != nil {
		c.dropEntry(seq)
		return nil, nil, fmt.Errorf("%w: %s's mailbox key is malformed", ErrUndeliverable, e.To)
	}
	policy, err := sealed.PlaintextPolicy(c.connPolicy(conn), len(tok))
	if err != nil {
		return nil, nil, err
	}
	env, err = sealed.Seal(policy, to, e.SendID, sealed.SenderIdentity{Key: c.prof.IdentityKey, Handle: c.prof.Handle}, e.Type, e.Payload, c.opts.Now())
	if err != nil {
		c.dropEntry(seq)
		c.raise(Alarm{Kind: AlarmDropped, Detail: fmt.Sprintf("a message to %s could not be sealed and was dropped: %v", e.To, err)})
		return nil, nil, fmt.Errorf("%w: %v", ErrUndeliverable, err)
	}
	return env, tok, nil
}

// sentEntry takes the server's answer (err) to one attempt at e: a token
// that can no longer pay is forgotten, an entry whose mailbox is gone is
// dropped with an alarm. It does not delete a stored entry from the
// outbox; the caller does. sent is when the request went out (zero when
// not known).
func (c *Client) sentEntry(seq uint64, e *outboxEntry, sent time.Time, err error) error {
	if code, ok := wire.CodeOf(err); ok {
		switch code {
		case wire.CodeTokenSpent, wire.CodeTokenExpired, wire.CodeTokenInvalid:
			// A token that can no longer pay: take a new one next time.
			c.unshown.shown(seq)
			c.store.Update(func(tx *state.Tx) error { return tx.Delete(bucketOutboxTokens, seqKey(seq)) })
		case wire.CodeNotFound:
			c.dropEntry(seq)
			c.raise(Alarm{Kind: AlarmDropped, Detail: fmt.Sprintf("%s's mailbox no longer exists; a message to them was dropped", e.To)})
			return fmt.Errorf("%w: %s's mailbox is gone", ErrUndeliverable, e.To)
		}
	}
	if err != nil {
		return fmt.Errorf("sending to %s: %w", e.To, err)
	}
	if f := c.opts.Sent; f != nil {
		f(e.ID, e.Cover)
	}
	if f := c.opts.SentEnvelope; f != nil {
		f(SentEnvelope{ID: e.ID, Conv: hex.EncodeToString(e.Conv), To: e.To, SendID: e.SendID, Intro: e.Intro, Kind: e.Kind, Cover: e.Cover, Echo: e.Type == sealed.ContentCommitEcho, Sent: sent, At: c.opts.Now()})
	}
	return nil
}

// assignTokens gives every outbox entry (at most max) that has no token
// one, taken from the wallet at once and recorded in one transaction.
func (c *Client) assignTokens(ctx context.Context, max int) error {
	var need []uint64
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketOutbox, 0, func(seq uint64, _ []byte) error {
			if len(need) >= max {
				return nil
			}
			_, err := tx.Get(bucketOutboxTokens, seqKey(seq))
			if errors.Is(err, state.ErrNoEntry) {
				need = append(need, seq)
				return nil
			}
			return err
		})
	})
	if err != nil || len(need) == 0 {
		return err
	}
	var take *tokenTake
	if n := len(need) - c.spareCount(); n > 0 {
		w, err := c.getWallet(ctx)
		if err != nil {
			return err
		}
		if err := c.refillBeforeSending(ctx, w, n); err != nil && w.Len() == 0 && n == len(need) {
			return err
		}
		if take, err = takeTokens(w, n); err != nil {
			return err
		}
		if take == nil && n == len(need) {
			return nil // none taken: entryToken reports it, per entry
		}
	}
	var assigned []uint64
	oldest := c.spareOldest()
	err = c.update(func(tx *state.Tx) error {
		var err error
		assigned, err = assignAll(tx, take, need, oldest)
		return err
	})
	if take != nil {
		err = take.done(err)
	}
	if err == nil {
		c.unshown.add(assigned...)
	}
	return err
}

// tokenTake is tokens taken from the wallet for outbox entries, with the
// wallet's encoding after the take: both are written in one transaction
// (record), before any of the tokens leaves, so that a token is never
// both in the stored wallet and assigned to an entry (which could spend
// it twice after a crash, linking the two sends) and one fsync covers
// both.
type tokenTake struct {
	w    *protocol.Wallet
	toks [][]byte
	enc  []byte
	gen  uint64
}

// takeTokens takes up to n tokens; nil when the wallet has none.
func takeTokens(w *protocol.Wallet, n int) (*tokenTake, error) {
	toks, enc, gen, err := w.TakeEncoded(n)
	if err != nil || len(toks) == 0 {
		return nil, err
	}
	return &tokenTake{w, toks, enc, gen}, nil
}

// record stores the wallet after the take and assigns toks, of the
// tokens taken, to the entries need, in order.
func (t *tokenTake) record(tx *state.Tx, need []uint64, toks [][]byte) error {
	if len(need) < len(toks) {
		return fmt.Errorf("outbox: %d tokens for %d entries", len(toks), len(need))
	}
	if err := tx.Put(bucketMeta, keyWallet, t.enc); err != nil {
		return err
	}
	for i, tok := range toks {
		if err := tx.Put(bucketOutboxTokens, seqKey(need[i]), tok); err != nil {
			return err
		}
	}
	return nil
}

// done follows the transaction that recorded t (err its result): if
// the wallet was encoded again meanwhile (a refill), the encoding the
// transaction wrote may be older than the one stored before it, so the
// wallet is stored again as it is in memory. A failed transaction took
// the tokens out of the wallet in memory only: they are never used.
func (t *tokenTake) done(err error) error {
	if !t.w.Current(t.gen) {
		if serr := t.w.Resave(); err == nil {
			err = serr
		}
	}
	return err
}

// takeTokensFor takes n tokens for entries about to be queued, or none
// (nil): in cover mode, or when the wallet holds fewer than n (flush then
// refills first where it may, and reports a shortage).
func (c *Client) takeTokensFor(ctx context.Context, n int) *tokenTake {
	if n <= 0 || c.coverMode() != nil {
		return nil
	}
	w, err := c.getWallet(ctx)
	if err != nil || w.Len() < n {
		return nil
	}
	take, err := takeTokens(w, n)
	if err != nil {
		return nil
	}
	return take
}

// untokened lists the outbox entries that have no token yet, oldest
// first.
func untokened(tx *state.Tx) ([]uint64, error) {
	var need []uint64
	err := tx.ForEachSeq(bucketOutbox, 0, func(seq uint64, _ []byte) error {
		_, err := tx.Get(bucketOutboxTokens, seqKey(seq))
		if errors.Is(err, state.ErrNoEntry) {
			need = append(need, seq)
			return nil
		}
		return err
	})
	return need, err
}

func (c *Client) dropEntry(seq uint64) {
	c.unshown.shown(seq)
	c.store.Update(func(tx *state.Tx) error {
		tx.Delete(bucketOutboxTokens, seqKey(seq))
		return tx.DeleteSeq(bucketOutbox, seq)
	})
}

// entryToken returns the entry's token, taking one from the wallet and
// recording it the first time.
func (c *Client) entryToken(ctx context.Context, seq uint64) ([]byte, error) {
	var tok []byte
	err := c.store.View(func(tx *state.Tx) error {
		t, err := tx.Get(bucketOutboxTokens, seqKey(seq))
		if errors.Is(err, state.ErrNoEntry) {
			return nil
		}
		tok = t
		return err
	})
	if err != nil || tok != nil {
		return tok, err
	}
	if c.spareCount() > 0 {
		oldest := c.spareOldest()
		err = c.update(func(tx *state.Tx) error {
			rest, err := assignSpare(tx, []uint64{seq}, oldest)
			if err != nil || len(rest) > 0 {
				return err
			}
			tok, err = tx.Get(bucketOutboxTokens, seqKey(seq))
			return err
		})
		if err != nil || tok != nil {
			if tok != nil {
				c.unshown.add(seq)
			}
			return tok, err
		}
	}
	if tok, err = c.token(ctx); err != nil {
		return nil, err
	}
	err = c.store.Update(func(tx *state.Tx) error { return tx.Put(bucketOutboxTokens, seqKey(seq), tok) })
	if err == nil {
		c.unshown.add(seq)
	}
	return tok, err
}

// closeConns closes the connections whose role starts with prefix.
func (c *Client) closeConns(prefix string) {
	c.mu.Lock()
	var done []*protocol.Conn
	for k, conn := range c.conns {
		if strings.HasPrefix(k, prefix) {
			done = append(done, conn)
			delete(c.conns, k)
		}
	}
	c.mu.Unlock()
	for _, conn := range done {
		conn.Close()
	}
}

// connPolicy is the padding policy of conn's server: the one its session
// announced, or, with no session (the last one was lost; the next request
// opens one), the pinned policy, which a session must announce (else the
// handshake fails with ErrPolicy). Sealing with the empty policy of a
// lost session failed every attempt, and since the attempt never reached
// the Send the session was never opened again: the entry stayed queued.
func (c *Client) connPolicy(conn *protocol.Conn) padding.Policy {
	if p := conn.Policy(); len(p.Buckets()) > 0 {
		return p
	}
	return c.Policy()
}
