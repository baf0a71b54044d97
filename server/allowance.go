package server

import (
	"sync"
	"time"
)

// sendAllowance is what a connection may still send without a token: a
// token spent by a Send on the connection pays for wire.SendsPerToken
// Sends there, itself and the rest with an empty auth (docs/adr/0017). It
// lives and dies with the connection and is never stored: the token's
// spend is recorded with the message that carried it, and the Sends it
// pays for later are as durable as any other (acknowledged = committed),
// so a crash loses at most an allowance, never a message or a spend.
//
// Sends on one connection are already linkable to each other (the
// connection links them), so the allowance links nothing new; it is
// bound to this connection, so it cannot be replayed on another one.
type sendAllowance struct {
	mu    sync.Mutex
	left  int
	until time.Time // when the paying token stops being accepted
}

// take consumes one Send of the allowance, if any is left and the token
// that paid for it is still within its validity at now.
func (a *sendAllowance) take(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.left == 0 {
		return false
	}
	if !now.Before(a.until) {
		a.left = 0
		return false
	}
	a.left--
	return true
}

// refund gives back a Send taken for a message that was not stored.
func (a *sendAllowance) refund() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.left++
}

// grant adds n Sends paid by a token valid until until. Sends left over
// from an older token take the newer one's validity: each token still
// pays for exactly SendsPerToken Sends, only their deadline moves.
func (a *sendAllowance) grant(n int, until time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.left += n
	if until.After(a.until) {
		a.until = until
	}
}
