package client

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
)

// Keeping the account apart from the anonymous connections in time
// (docs/user-guide.md "Delivery tokens", threat model "tie an account's
// refills to its anonymous sends by timing").
//
// The account's session names the account on every connection that
// carries it; the anonymous connections (mailboxes, sends, lookups) name
// no one, and over Tor each takes a circuit of its own. What is left to
// the server is timing: a connection that starts right after, or right
// before, an account exchange is probably the same client's. So:
//
//   - No account connection outlives its exchange. The refill schedule
//     and the one-shot top-up each dial a fresh connection
//     (accountExchange) and close it afterwards; a user-initiated account
//     action (Register, Login, KTCheck, the quota) closes its own when it
//     ends (closeAccount), and a refill within it uses it. A run's
//     token-key check carries no session and goes on an anonymous
//     connection of its own (checkTokenKey).
//   - An account exchange waits until no anonymous connection has been
//     dialled for a random quiet gap (accountQuietMin plus up to as much
//     again), and no anonymous connection is dialled while it runs nor
//     for another such gap after it (awaitAnonymous). If no gap comes
//     within accountClaimAfter(), the exchange holds new anonymous dials
//     until one has passed, so that it cannot starve. A one-shot run that
//     had to refill therefore waits before its sends (QuietUntil tells
//     the caller how long, to say so).
//   - The mailbox connections a run opens at once are staggered
//     (staggerGap), so that the burst does not announce "these mailboxes
//     belong together".

// accountQuietMin is the shortest gap kept between an account exchange
// and the dialling of an anonymous connection, either way round; each
// gap is drawn uniformly from [accountQuietMin, 2 × accountQuietMin).
// Longer is harder to link on a quiet server and slower for the one run
// in ~DefaultWalletLow sends that has to refill first.
var accountQuietMin = 2 * time.Second

// accountClaimAfter is how long an account exchange waits for a quiet
// gap to come by itself. After that it makes one: anonymous dials wait
// (as they do during an exchange) until the gap since the last one has
// passed, the exchange is done and a gap after it has passed too. A
// client that dials often (a first-contact connection per flush, KT
// lookups, a busy sync loop) would otherwise hold its own refills off
// for ever; no anonymous dial comes nearer the exchange either way, so
// the server learns nothing more.
func accountClaimAfter() time.Duration { return 2 * accountQuietMin }

// claimPoll is how often an exchange that claimed the quiet gap checks
// whether the anonymous dials under way have ended.
const claimPoll = 50 * time.Millisecond

// staggerTotal bounds the delays that spread the mailbox connections a
// run opens at once: the whole spread stays within it, so Sync is at
// most this much slower on a fresh start.
var staggerTotal = 2 * time.Second

// quietGap draws one quiet gap.
func quietGap() time.Duration {
	return accountQuietMin + time.Duration(mrand.Int64N(int64(accountQuietMin)))
}

// accountExchange runs fn on a fresh account connection, closed
// afterwards, at a moment apart from every anonymous dial (see above).
// Exchanges run one at a time.
func (c *Client) accountExchange(ctx context.Context, fn func(*protocol.Conn) error) error {
	c.mu.Lock()
	user := c.conns[connAccount]
	c.mu.Unlock()
	if user != nil {
		// A user-initiated account action (registration, login, a
		// key-transparency check) holds the account connection for its
		// duration: its refill is part of it.
		return fn(user)
	}
	quiet := quietGap()
	claimAt := time.Now().Add(accountClaimAfter())
	claimed := false // this exchange holds acctBusy while it waits
	for {
		c.mu.Lock()
		busy := c.acctBusy
		var wait time.Duration
		if claimed || busy == nil {
			busy = nil
			wait = time.Until(c.lastAnon.Add(quiet))
			if c.anonDialing > 0 {
				wait = quiet
				if claimed {
					wait = claimPoll // the dial's end restarts the gap
				}
			}
			if wait <= 0 {
				if !claimed {
					c.acctBusy = make(chan struct{})
				}
				c.mu.Unlock()
				break
			}
			if !claimed {
				until := time.Until(claimAt)
				if until <= 0 {
					// No gap came by itself: make one. New anonymous
					// dials wait (awaitAnonymous) from now until the
					// exchange and the gap after it are over.
					c.acctBusy = make(chan struct{})
					claimed = true
					c.mu.Unlock()
					continue
				}
				wait = min(wait, until)
			}
		}
		c.mu.Unlock()
		if err := holdOff(ctx, busy, wait); err != nil {
			if claimed {
				c.mu.Lock()
				close(c.acctBusy)
				c.acctBusy = nil
				c.mu.Unlock()
			}
			return err
		}
	}
	defer func() {
		c.mu.Lock()
		c.anonHold = time.Now().Add(quietGap())
		close(c.acctBusy)
		c.acctBusy = nil
		c.mu.Unlock()
	}()
	conn, err := c.dial(ctx, connAccount)
	if err != nil {
		return fmt.Errorf("account connection: %w", err)
	}
	defer conn.Close()
	return fn(conn)
}

// awaitAnonymous holds the dialling of an anonymous connection while an
// account exchange runs and for the quiet gap after it, then records the
// dial (anonDialed must follow once it is done). c.mu is not held.
func (c *Client) awaitAnonymous(ctx context.Context) error {
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return protocol.ErrClosed
		}
		busy := c.acctBusy
		wait := time.Until(c.anonHold)
		if busy == nil && wait <= 0 {
			c.anonOpened = true
			c.anonDialing++
			c.lastAnon = time.Now()
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		if err := holdOff(ctx, busy, wait); err != nil {
			return err
		}
	}
}

// anonDialed ends an anonymous dial begun by awaitAnonymous: over Tor
// the first request may come seconds after the dial began, so the quiet
// gap is also counted from here.
func (c *Client) anonDialed() {
	c.mu.Lock()
	c.anonDialing--
	c.lastAnon = time.Now()
	c.mu.Unlock()
}

// QuietUntil is when this Client may next open an anonymous connection:
// after a refill, a run waits until then before it sends or fetches, so
// that the server cannot tie the account's refill to the run's anonymous
// traffic by timing. The zero time or a past one: no wait.
func (c *Client) QuietUntil() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.anonHold
}

// staggerGap is the random delay before the next of n connections opened
// at once (n > 1): uniform in [0, staggerTotal / (n-1)), so the n-1 gaps
// add up to less than staggerTotal, half of it on average.
func staggerGap(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return time.Duration(mrand.Int64N(int64(staggerTotal) / int64(n-1)))
}

// closeAccount closes the account connection that a user-initiated
// account action (Register, Login, KTCheck, the quota, the one-time
// KeyPackages) opened, when the action ends: none stays open for the
// background exchanges to be timed against.
func (c *Client) closeAccount() {
	c.mu.Lock()
	acct := c.conns[connAccount]
	delete(c.conns, connAccount)
	c.mu.Unlock()
	if acct != nil {
		acct.Close()
	}
}

// connOpen reports whether the connection for a role is open.
func (c *Client) connOpen(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[key] != nil
}

// sleepCtx sleeps for d or until ctx ends.
// holdOff waits until busy (an account exchange under way) is closed,
// or, with none under way, for wait.
func holdOff(ctx context.Context, busy chan struct{}, wait time.Duration) error {
	if busy != nil {
		select {
		case <-busy:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return sleepCtx(ctx, wait)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
