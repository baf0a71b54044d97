package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/kt"
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
	// Policy is the pinned padding policy (PinPolicy).
	Policy string `json:"padding_policy"`
	// OneTimeKeyPackages is how many one-time KeyPackages this device
	// holds the private keys of: uploaded to the server's pool and not
	// yet used by a Welcome or expired (keypackages.go).
	OneTimeKeyPackages int         `json:"one_time_key_packages"`
	Alarms             []Alarm     `json:"alarms"`
	Cover              CoverStatus `json:"cover"`
	// TokenQuota is the account's token allowance and what it took this
	// epoch, asked on the session when logged in and the server is
	// reachable; TokenQuotaError says why asking failed.
	TokenQuota      *protocol.TokenQuotaStatus `json:"token_quota,omitempty"`
	TokenQuotaError string                     `json:"token_quota_error,omitempty"`
	// OwnerCheck is how owner monitoring (KTCheck) went; GossipPending
	// how many checkpoints contacts gossiped are not compared yet
	// (gossip.go), the oldest kept since GossipPendingSince.
	OwnerCheck         OwnerCheckStatus `json:"owner_check"`
	GossipPending      int              `json:"kt_gossip_pending"`
	GossipPendingSince time.Time        `json:"kt_gossip_pending_since,omitzero"`
}

// OwnerCheckStatus is what `qpc status` shows of owner monitoring.
type OwnerCheckStatus struct {
	// LastClean is when KTCheck last completed (zero: never, on this
	// device since owner checks were recorded).
	LastClean time.Time `json:"last_clean,omitzero"`
	// Failures is how many checks in a row the server made fail, the
	// first at FailingSince; an alarm is raised past the bound.
	Failures     int       `json:"failures"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	// LastError is the last failure, whoever caused it.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// LastErrorUncounted: the last failure was filed as this side's (no
	// network: nothing of this client's was answered around it, or the
	// caller's context ended) and not counted.
	LastErrorUncounted bool `json:"last_error_uncounted,omitempty"`
	// Stale: registered, and no check completed for OwnerCheckStale.
	Stale bool `json:"stale"`
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
	st.Policy = c.Policy().String()
	oc := p.OwnerCheck
	st.OwnerCheck = OwnerCheckStatus{LastClean: oc.LastClean, Failures: oc.Failures, FailingSince: oc.FailingSince,
		LastError: oc.LastError, LastErrorAt: oc.LastErrorAt, LastErrorUncounted: oc.LastErrorUncounted,
		Stale: p.Handle != "" && c.opts.Now().Sub(oc.LastClean) >= OwnerCheckStale}
	st.GossipPending = len(p.PendingGossip)
	for _, g := range p.PendingGossip {
		if st.GossipPendingSince.IsZero() || (!g.Since.IsZero() && g.Since.Before(st.GossipPendingSince)) {
			st.GossipPendingSince = g.Since
		}
	}
	err := c.store.View(func(tx *state.Tx) error {
		if err := tx.ForEachSeq(bucketOutbox, 0, func(seq uint64, _ []byte) error {
			if !c.retiring.has(seq) { // acknowledged (retire.go)
				st.Outbox++
			}
			return nil
		}); err != nil {
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
	w, err := protocol.NewWallet(walletStore{c.store}, nil, nil, protocol.WalletOptions{})
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
	policy := c.Policy()
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
	defer c.closeAccount()
	c.pending = nil
	p := c.prof
	if p.Handle == "" {
		return nil, ErrNotRegistered
	}
	if p.Session == nil || !c.opts.Now().Before(p.Session.Expiry) {
		return nil, ErrNoSession
	}
	start := time.Now()
	kctx, cancel := ktContext(ctx)
	defer cancel()
	acct, err := c.conn(kctx, connAccount)
	if err != nil {
		return c.ownerCheckFailed(ctx, nil, err, start)
	}
	owner := c.ktOwner()
	alarms, err := acct.KTMonitor(kctx, c.v, p.Session, owner)
	if err != nil {
		return c.ownerCheckFailed(ctx, acct, err, start)
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
	p.OwnerCheck = ownerCheck{LastClean: c.opts.Now()}
	return out, c.saveProfile()
}

// Bounds on the checks a server can keep from completing (issue 17): owner
// monitoring here, checkpoint gossip in gossip.go. A check that fails
// because of the server — an error record, a malformed answer, a
// checkpoint older than one seen or that it will not prove consistent, or
// no answer while the server answers this client anything else (see
// serverCaused) — is retried, and becomes an alarm once it has failed
// CheckAttempts times in a row over at least CheckGrace. An answer that is
// evidence on its own (a proof that does not verify, two checkpoints that
// cannot both be honest) is an alarm at once. A failure on this side (no
// network: nothing answered at all; the caller's context ended) counts
// for nothing, but `qpc status` shows it, and how long ago a check last
// completed.
const (
	CheckAttempts = 3
	CheckGrace    = 10 * time.Minute
	// OwnerCheckStale is how long without a completed owner check makes
	// `qpc status` warn.
	OwnerCheckStale = 7 * 24 * time.Hour
	// probeTimeout bounds the Health request that tells "the server does
	// not answer this" from "the server cannot be reached"; a check under
	// a caller's deadline keeps up to this much of it (ktContext).
	probeTimeout = 5 * time.Second
	// recentAnswer: an answer to any request of this client this long
	// before a check started, or during it, shows the network worked.
	recentAnswer = time.Minute
)

// ktContext is the context of a check's requests under the caller's ctx:
// with a caller's deadline, one that ends earlier, keeping a quarter of
// the time left (at most probeTimeout) to tell who caused a failure. A
// server that holds a request open then makes it end as a timeout of the
// check's own, counted, not as the caller's deadline, which counts for
// nothing.
func ktContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	keep := min(probeTimeout, time.Until(dl)/4)
	return context.WithDeadline(ctx, dl.Add(-keep))
}

// ownerCheck is the persisted record of owner monitoring (in the
// profile, so that neither a restart nor a reopen resets the count).
type ownerCheck struct {
	LastClean    time.Time `json:",omitzero"`
	Failures     int       `json:",omitempty"` // in a row, caused by the server
	FailingSince time.Time `json:",omitzero"`
	LastError    string    `json:",omitempty"`
	LastErrorAt  time.Time `json:",omitzero"`
	// LastErrorUncounted: the last failure was this side's (no network).
	LastErrorUncounted bool `json:",omitempty"`
	Alarmed            bool `json:",omitempty"` // this run of failures raised its alarm
}

// failed records a failed check; byServer says whether the server caused
// it. It reports whether the run of failures has just passed the bound
// (once per run).
func (o *ownerCheck) failed(now time.Time, err error, byServer bool) (alarm bool) {
	o.LastError, o.LastErrorAt, o.LastErrorUncounted = err.Error(), now, !byServer
	if !byServer {
		return false
	}
	if o.Failures == 0 {
		o.FailingSince = now
	}
	o.Failures++
	if o.Alarmed || !pastBound(o.Failures, o.FailingSince, now) {
		return false
	}
	o.Alarmed = true
	return true
}

// pastBound: attempts failed checks, the first at since, exceed the
// bound at now.
func pastBound(attempts int, since, now time.Time) bool {
	return attempts >= CheckAttempts && now.Sub(since) >= CheckGrace
}

// ownerCheckFailed records a failed owner check and raises the alarm it
// calls for; it returns the alarms raised and err. The check started at
// start (monotonic time).
func (c *Client) ownerCheckFailed(ctx context.Context, conn *protocol.Conn, err error, start time.Time) ([]Alarm, error) {
	err = fmt.Errorf("owner check: %w", err)
	now := c.opts.Now()
	oc := &c.prof.OwnerCheck
	var out []Alarm
	var sv *kt.SplitViewError
	var ce *kt.CosignatureError
	switch {
	case errors.As(err, &sv):
		out = append(out, Alarm{Kind: AlarmKT, Evidence: [][]byte{sv.Seen, sv.Shown},
			Detail: "owner monitoring: the server's log is inconsistent with the one it showed you before: it is showing you a fork"})
	case errors.As(err, &ce):
		out = append(out, Alarm{Kind: AlarmKT, Evidence: [][]byte{ce.Checkpoint},
			Detail: "owner monitoring: the server answered with a checkpoint its witnesses did not cosign (" + ce.Error() + "): it may be showing you a history of its own"})
	case errors.Is(err, kt.ErrInvalid), errors.Is(err, kt.ErrConfig), errors.Is(err, kt.ErrInconsistent):
		out = append(out, Alarm{Kind: AlarmKT,
			Detail: "owner monitoring: the server answered with a history of your handle that does not verify: " + err.Error()})
	}
	evidence := len(out) > 0
	if oc.failed(now, err, evidence || c.serverCaused(ctx, healthProbe(conn), err, start)) && !evidence {
		out = append(out, Alarm{Kind: AlarmKTUnverified, Detail: fmt.Sprintf(
			"owner monitoring failed %d times since %s because of the server's answers (last: %v): it will not show you the versions of your own keys, and keys in your name may be shown to others",
			oc.Failures, oc.FailingSince.UTC().Format(time.RFC3339), err)})
	}
	if evidence {
		oc.Alarmed = true
	}
	for _, a := range out {
		c.raise(a)
	}
	if serr := c.saveProfile(); serr != nil {
		return out, errors.Join(err, serr)
	}
	return out, err
}

// serverCaused reports whether a failed request of a check that started
// at start (monotonic time) is the server's doing rather than this side's:
// an answer came (an error record, or bytes that did not parse or
// verify), or nothing came but the server answered some other request of
// this client, on any of its connections (a hello included), during the
// check or within recentAnswer before it, or answers probe (a Health
// request on the check's connection, healthProbe; nil: none) now. Only a failure with nothing answered around it is "no
// network": a server cannot withhold one answer, or one kind of answer
// (Health too), and have that filed as the network's fault while it
// answers the rest. A cancelled context or a closed client is never the
// server's doing.
func (c *Client) serverCaused(ctx context.Context, probe func(context.Context) error, err error, start time.Time) bool {
	if ctx.Err() != nil || errors.Is(err, protocol.ErrClosed) || errors.Is(err, context.Canceled) {
		return false
	}
	if !transportError(err) {
		return true
	}
	if c.answers.since(start.Add(-recentAnswer)) {
		return true
	}
	if probe == nil {
		return false
	}
	probed := time.Now()
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	herr := probe(pctx)
	return ctx.Err() == nil && (herr == nil || !transportError(herr) || c.answers.since(probed))
}

// healthProbe is serverCaused's probe on conn: a Health request. It is
// nil without a connection.
func healthProbe(conn *protocol.Conn) func(context.Context) error {
	if conn == nil {
		return nil
	}
	return func(ctx context.Context) error {
		_, err := conn.Health(ctx)
		return err
	}
}

// transportError: err says nothing came back (a timeout, a reset or
// closed connection or stream, a failed dial), not what the server said.
func transportError(err error) bool {
	var ne net.Error
	var se *quic.StreamError
	var ae *quic.ApplicationError
	var te *quic.TransportError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, protocol.ErrPin) || errors.As(err, &ne) || errors.As(err, &se) || errors.As(err, &ae) || errors.As(err, &te)
}

// answerLog is when a server last answered any request of one client, on
// any of its connections: the evidence that tells "the server withholds
// this answer" from "nothing reaches the server" (serverCaused). It keeps
// the monotonic clock, which the network's liveness is a matter of.
type answerLog struct {
	mu   sync.Mutex
	last time.Time
}

// mark records an answer now.
func (a *answerLog) mark() {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.last = time.Now()
	a.mu.Unlock()
}

// since reports whether an answer came at t or later.
func (a *answerLog) since(t time.Time) bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.last.IsZero() && !a.last.Before(t)
}
