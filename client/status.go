package client

import (
	"context"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/padding"
)

// Status is what `qpc status` shows.
type Status struct {
	Server        string    `json:"server"`
	Handle        string    `json:"handle"`
	LoggedIn      bool      `json:"logged_in"`
	SessionEnds   time.Time `json:"session_ends,omitzero"`
	Tor           bool      `json:"tor"`
	Reachable     bool      `json:"reachable"`
	Health        string    `json:"health"`
	Tokens        int       `json:"tokens"`
	Outbox        int       `json:"outbox"`
	Conversations int       `json:"conversations"`
	KTSize        uint64    `json:"kt_tree_size"`
	// OneTimeKeyPackages is how many one-time KeyPackages this device
	// holds the private keys of: uploaded to the server's pool and not
	// yet used by a Welcome or expired (keypackages.go).
	OneTimeKeyPackages int         `json:"one_time_key_packages"`
	Alarms             []Alarm     `json:"alarms"`
	Cover              CoverStatus `json:"cover"`
	// TokenQuota is the account's token allowance and what it took this
	// epoch, asked on the session when logged in and the server is
	// reachable; TokenQuotaError says why asking failed.
	TokenQuota      *TokenQuotaStatus `json:"token_quota,omitempty"`
	TokenQuotaError string            `json:"token_quota_error,omitempty"`
}

// Status reports the client's state and asks the server for its health.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	c.op.Lock()
	p := c.prof
	st := &Status{Server: p.Server, Handle: p.Handle, Tor: c.opts.Dial.Tor != nil}
	if s := p.Session; s != nil && c.opts.Now().Before(s.Expiry) {
		st.LoggedIn, st.SessionEnds = true, s.Expiry
	}
	if cp := c.v.Latest(); cp != nil {
		st.KTSize = cp.Size
	}
	err := c.store.View(func(tx *state.Tx) error {
		if err := tx.ForEachSeq(bucketOutbox, 0, func(uint64, []byte) error { st.Outbox++; return nil }); err != nil {
			return err
		}
		if err := tx.ForEach(bucketOneTimeKPs, func(_, _ []byte) error { st.OneTimeKeyPackages++; return nil }); err != nil {
			return err
		}
		return tx.ForEach(bucketConvs, func(_, _ []byte) error { st.Conversations++; return nil })
	})
	c.op.Unlock()
	if err != nil {
		return nil, err
	}
	w, err := NewWallet(walletStore{c.store}, nil, nil, WalletOptions{})
	if err != nil {
		return nil, err
	}
	st.Tokens = w.Len()
	if st.Alarms, err = c.Alarms(); err != nil {
		return nil, err
	}
	conn, err := c.conn(ctx, connKT)
	if err == nil {
		var h uint8
		if h, err = conn.Health(ctx); err == nil {
			st.Reachable = true
			st.Health = healthString(h)
		}
	}
	if err != nil {
		st.Health = "unreachable: " + err.Error()
	}
	policy := padding.Default
	if conn != nil && st.Reachable {
		policy = conn.Policy()
	}
	c.op.Lock()
	if s := c.prof.Session; st.LoggedIn && st.Reachable && s != nil {
		if q, err := c.accountQuota(ctx, s); err == nil {
			st.TokenQuota = &q
		} else {
			st.TokenQuotaError = err.Error()
		}
	}
	st.Cover = c.coverStatus(policy)
	if q := st.TokenQuota; q != nil && st.Cover.On && q.Quota > 0 {
		st.Cover.QuotaShare = st.Cover.Rate * q.EpochLength.Seconds() / float64(q.Quota)
	}
	c.op.Unlock()
	return st, nil
}

func healthString(h uint8) string {
	switch h {
	case 0:
		return "ok"
	case 1:
		return "draining"
	default:
		return fmt.Sprintf("status %d", h)
	}
}

// KTCheck is owner monitoring: it fetches the complete, verified history
// of our own handle in the key-transparency log and compares it with
// what this device published. Every version we did not publish (keys the
// server showed others in our name) becomes an alarm with the evidence.
func (c *Client) KTCheck(ctx context.Context) ([]Alarm, error) {
	c.op.Lock()
	defer c.op.Unlock()
	c.pending = nil
	p := c.prof
	if p.Handle == "" {
		return nil, ErrNotRegistered
	}
	if p.Session == nil || !c.opts.Now().Before(p.Session.Expiry) {
		return nil, ErrNoSession
	}
	acct, err := c.conn(ctx, connAccount)
	if err != nil {
		return nil, err
	}
	owner := c.ktOwner()
	alarms, err := acct.KTMonitor(ctx, c.v, p.Session, owner)
	if err != nil {
		return nil, err
	}
	var out []Alarm
	for _, a := range alarms {
		al := Alarm{Kind: AlarmKT, Detail: "your handle in the key-transparency log: " + a.String(), Evidence: [][]byte{a.Checkpoint, a.Proof}}
		c.raise(al)
		out = append(out, al)
	}
	c.checkOwnTokenCommitments(ctx) // tokenkeys.go
	for _, e := range c.pending {
		if e.Alarm != nil && e.Alarm.Kind == AlarmTokenKey {
			out = append(out, *e.Alarm)
		}
	}
	p.KTChecked = owner.Checked()
	return out, c.saveProfile()
}
