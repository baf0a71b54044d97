package client

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/tokens"
)

// Token keys and refills (docs/key-transparency.md §2, docs/user-guide.md
// "Delivery tokens"). A server that handed one user a token key, or an
// epoch, of its own could recognise every token that user spends on its
// anonymous connections. So the wallet takes a key only once it matches
// the key committed in key transparency for its epoch, the epoch matches
// the clock, and the key matches any key remembered for that epoch; the
// token-key commitments in bindings (others' and our own) are compared
// with the same log. Every mismatch is an AlarmTokenKey.
//
// Refills are not timed by spends: a following client refills on the
// wallet's own exponential schedule (Wallet.RunRefills); a one-shot run
// may refill only before it opened any connection other than the account
// and checkpoint ones (RefillIfEmpty, and the implicit top-up of a run
// that has not opened one yet). Every refill is an account exchange on a
// connection of its own, kept apart in time from the anonymous dials
// (linking.go): a run that refilled waits a quiet gap before it sends.

// tokenKeyAlarm records a wallet's TokenKeyAlarm. The wallet may call it
// from the refill schedule's goroutine, so it does not touch the running
// operation's events (see raiseBackground).
func (c *Client) tokenKeyAlarm(a protocol.TokenKeyAlarm) {
	var ev [][]byte
	if a.Shown != nil {
		ev = append(ev, a.Shown)
	}
	if a.Known != nil {
		ev = append(ev, a.Known)
	}
	detail := "the server showed you a token key no one else is shown, so it could recognise the messages you pay for: " + a.Err.Error()
	switch {
	case errors.Is(a.Err, protocol.ErrTokenEpoch):
		detail = "the server named a token epoch the clock contradicts (check this device's clock), so it could recognise the messages you pay for: " + a.Err.Error()
	case errors.Is(a.Err, protocol.ErrEpochLength):
		detail = "the server announced a token epoch length other than the one remembered or committed in key transparency for everyone, which would give you epochs of your own: " + a.Err.Error()
	}
	c.raiseBackground(Alarm{Kind: AlarmTokenKey, Detail: detail, Evidence: ev})
}

// raiseBackground records an alarm like raise, from any goroutine: the
// event is handed to the next operation's events (takeEvents).
func (c *Client) raiseBackground(a Alarm) {
	ev := c.recordAlarm(a)
	c.mu.Lock()
	c.bgEvents = append(c.bgEvents, ev)
	c.mu.Unlock()
}

// backgroundEvents takes the events raised outside operations.
func (c *Client) backgroundEvents() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.bgEvents
	c.bgEvents = nil
	return ev
}

// walletOptions are the messenger's wallet options. The low-water mark
// covers the cover traffic's spending between two scheduled refill
// checks but for a chance of 1 in 1,000: spending at r tokens a second,
// the wallet runs dry before the next check (an exponential gap of mean
// m) with probability exp(-low / (r × m)), so low ≥ r × m × ln 1000.
func (c *Client) walletOptions() protocol.WalletOptions {
	o := protocol.WalletOptions{KT: c.v, Now: c.opts.Now, RefillMean: c.refillMean(), OnAlarm: c.tokenKeyAlarm}
	if cv := c.coverMode(); cv != nil {
		// At most ten batches a check: a rate beyond the quota runs dry
		// anyway (the cover quota check warns of it).
		low := math.Ceil(cv.Rate * o.RefillMean.Seconds() * math.Log(1000))
		o.Low = int(max(protocol.DefaultWalletLow, min(low, 10*tokens.MaxBatch)))
	}
	return o
}

// RefillIfEmpty tops the wallet up to its low-water mark when it holds
// fewer tokens (not only when it is empty: a run should rarely need a
// refill after its first send, when it may no longer refill), if this
// Client has not opened any connection but the checkpoint one yet and no
// refill schedule runs. A one-shot command calls it first, so that the
// refill precedes all of its sends; Follow calls it before it starts the
// schedule. The refill is an account exchange of its own, and the
// anonymous connections that follow wait a random quiet gap after it
// (QuietUntil says until when), so the server cannot tie them to the
// account by timing.
func (c *Client) RefillIfEmpty(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	if c.prof.Handle == "" {
		return nil
	}
	w, err := c.getWallet(ctx)
	if err != nil {
		return err
	}
	if !w.CanRefill() {
		return nil
	}
	if w.Len() >= w.Low() {
		// The run's token-key check (a refill checks the key itself): a
		// mismatch is an alarm now rather than at the next refill.
		// Tokens already held were obtained under checked keys and stay
		// spendable.
		c.checkTokenKey(ctx, w)
		return nil
	}
	return c.refillBeforeSending(ctx, w, w.Low())
}

// checkTokenKey checks the server's current token key (Wallet.Key) on an
// anonymous connection of its own, closed afterwards. The exchange
// carries no session and is the same for every client (TokenKeys, and a
// key-transparency lookup of the key's label), so it names no one and
// need not be kept apart from the other anonymous connections; nor can
// the server pick whom to show a key of its own to, short of telling
// clients apart by their network address.
func (c *Client) checkTokenKey(ctx context.Context, w *protocol.Wallet) {
	conn, err := c.dial(ctx, connTokenKey)
	if err == nil {
		_, err = w.KeyOn(ctx, conn)
		conn.Close()
	}
	if err != nil {
		c.log.Debug("token key", "err", err)
	}
}

// refillBeforeSending tops the wallet up when it holds fewer than need
// tokens, but only in a run with no refill schedule that has opened no
// connection but the account and checkpoint ones: then no send precedes
// the refill. Otherwise the sends wait for the schedule.
func (c *Client) refillBeforeSending(ctx context.Context, w *protocol.Wallet, need int) error {
	c.mu.Lock()
	allowed := c.refillLoops == 0 && !c.anonOpened
	c.mu.Unlock()
	if !allowed || !w.CanRefill() || w.Len() >= need {
		return nil
	}
	return w.TopUp(ctx, max(need, w.Low()))
}

// StartRefills runs the token wallet's refill schedule (Wallet.RunRefills:
// checks at exponential gaps of mean Options.RefillMean, each
// topping the wallet up to its low-water mark) until the returned stop is
// called or ctx ends. Follow runs it; a program that sends from a
// long-lived Client without following runs it itself, since sends never
// refill. One-shot refills stop while it runs.
func (c *Client) StartRefills(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	c.refillLoops++
	c.mu.Unlock()
	done := make(chan struct{})
	gap := func() time.Duration { return protocol.ExpGap(c.refillMean()) }
	go func() {
		defer close(done)
		protocol.RunSchedule(ctx, gap, func(at time.Time) {
			c.op.Lock()
			var w *protocol.Wallet
			var err error
			if c.prof.Handle != "" {
				w, err = c.getWallet(ctx)
			}
			c.op.Unlock()
			if err != nil {
				c.log.Debug("scheduled refill", "err", err)
				return
			}
			if w == nil || !w.CanRefill() {
				return
			}
			w.ScheduledRefill(ctx, at)
			if err := w.RefillErr(); err != nil && ctx.Err() == nil {
				c.log.Debug("scheduled refill", "err", err)
			}
		})
	}()
	return func() {
		cancel()
		<-done
		c.mu.Lock()
		c.refillLoops--
		c.mu.Unlock()
	}
}

func (c *Client) refillMean() time.Duration {
	if c.opts.RefillMean > 0 {
		return c.opts.RefillMean
	}
	return protocol.DefaultRefillMean
}

// checkTokenCommitments compares the token-key commitments a binding
// carries (the keys the server showed its owner, kt.TokenKeyCommitment)
// with the keys this wallet remembers, or else with the keys committed in
// key transparency for those epochs. A commitment to another key, to an
// epoch never committed, to an epoch past the clock's next one, or to one
// that began before tokenEpochFloor is an alarm: the server showed that
// user a key, or an epoch, of its own. Transient failures are ignored
// (the next lookup compares again).
func (c *Client) checkTokenCommitments(ctx context.Context, handle string, b *kt.Binding) {
	if b == nil || len(b.TokenKeys) == 0 {
		return
	}
	w := c.wallet
	if w == nil {
		var err error
		if w, err = protocol.NewWallet(walletStore{c.store}, nil, nil, protocol.WalletOptions{}); err != nil {
			c.log.Debug("token-key commitments not compared", "err", err)
			return
		}
	}
	known, epochLen := w.KnownKeys(), w.EpochLength()
	whose := handle + "'s"
	if handle == c.prof.Handle {
		whose = "your"
	}
	for _, tk := range b.TokenKeys {
		if epochLen > 0 && tk.Epoch > tokens.EpochAt(c.opts.Now().Add(protocol.TokenEpochSkew), epochLen)+1 {
			c.raise(Alarm{Kind: AlarmTokenKey, Detail: fmt.Sprintf("%s key-transparency binding commits to a token key of epoch %d, after the clock's next epoch: the server gave that account epochs of its own", whose, tk.Epoch)})
			continue
		}
		if epochLen > 0 && tk.Epoch < tokens.EpochAt(tokenEpochFloor, epochLen) {
			c.raise(Alarm{Kind: AlarmTokenKey, Detail: fmt.Sprintf("%s key-transparency binding commits to a token key of epoch %d, which began before any qpc server issued tokens (%s): the server gave that account epochs of its own", whose, tk.Epoch, tokenEpochFloor.Format(time.DateOnly))})
			continue
		}
		want, ok := known[tk.Epoch]
		if !ok {
			committed, err := c.committedTokenKey(ctx, tk.Epoch)
			if errors.Is(err, protocol.ErrTokenKeyMismatch) {
				c.raise(Alarm{Kind: AlarmTokenKey, Detail: fmt.Sprintf("the token key committed for epoch %d (in %s binding) is not a single well-formed key: %v", tk.Epoch, whose, err)})
				continue
			}
			if err != nil {
				c.log.Debug("token-key commitment not compared", "epoch", tk.Epoch, "err", err)
				continue
			}
			if committed == nil {
				c.raise(Alarm{Kind: AlarmTokenKey, Detail: fmt.Sprintf("%s key-transparency binding commits to a token key for epoch %d, which the server never committed: it showed that account a key of its own", whose, tk.Epoch)})
				continue
			}
			want = committed
		}
		h := sha256.Sum256(want)
		if subtle.ConstantTimeCompare(h[:], tk.Hash[:]) != 1 {
			c.raise(Alarm{Kind: AlarmTokenKey, Detail: fmt.Sprintf("%s key-transparency binding commits to a token key for epoch %d other than the one the log commits: the server showed that account a key of its own", whose, tk.Epoch), Evidence: [][]byte{want}})
		}
	}
}

// tokenEpochFloor is the oldest instant a token epoch can contain: no qpc
// server issued tokens before it. Bindings are republished rarely, so a
// commitment may be to an epoch long past, but not to one before this; an
// epoch number that small is one a server computed with a longer epoch
// length than it announces to others (epochs of that user's own).
var tokenEpochFloor = time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)

// checkOwnTokenCommitments compares the token-key commitments of our own
// current binding with key transparency (checkTokenCommitments): keys a
// wallet of an earlier version took unchecked are caught here.
func (c *Client) checkOwnTokenCommitments(ctx context.Context) {
	res, b, err := c.lookupLabel(ctx, c.prof.Handle)
	if err != nil || res.Version == 0 {
		return
	}
	c.checkTokenCommitments(ctx, c.prof.Handle, b)
}

// committedTokenKey looks up the token key committed in key transparency
// for epoch (nil: none), on a lookup connection of its own. A label
// changed after its first version, or a malformed key, is
// ErrTokenKeyMismatch.
func (c *Client) committedTokenKey(ctx context.Context, epoch uint32) ([]byte, error) {
	conn, err := c.dial(ctx, fmt.Sprintf("%s:%d", connKTLookup, c.lookups.Add(1)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	res, err := conn.KTLookupValue(ctx, c.v, kt.TokenKeyLabel(epoch))
	if err != nil {
		return nil, err
	}
	switch {
	case res.Version == 0:
		return nil, nil
	case res.Version != 1:
		return nil, fmt.Errorf("epoch %d: %w", epoch, protocol.ErrTokenKeyMismatch)
	}
	if pk, err := tokens.ParsePublicKey(res.Value); err != nil || pk.Epoch != epoch {
		return nil, fmt.Errorf("epoch %d: %w: malformed committed key", epoch, protocol.ErrTokenKeyMismatch)
	}
	return res.Value, nil
}
