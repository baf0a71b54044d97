package server

import (
	"context"
	"errors"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// countError counts the Error record about to be sent for a request of
// kind, with the code writeError will put on the wire.
func (s *Server) countError(kind string, err error) {
	code, ok := wire.CodeOf(err)
	if !ok {
		code = wire.CodeInternal
	}
	s.opts.Metrics.RequestError(kind, code)
}

// countTokenRejection counts a token refused by the authorizer or found
// spent by the store. Other errors are not about the token.
func (s *Server) countTokenRejection(err error) {
	switch code, _ := wire.CodeOf(err); code {
	case wire.CodeTokenMissing, wire.CodeTokenInvalid, wire.CodeTokenSpent, wire.CodeTokenExpired:
		s.opts.Metrics.TokenRejected(code)
	}
}

// accountOutcome classifies the result of a login or registration for
// qpc_logins_total and qpc_registrations_total.
func accountOutcome(err error) string {
	switch {
	case err == nil:
		return metrics.OutcomeSuccess
	case errors.Is(err, accounts.ErrRateLimited):
		return metrics.OutcomeRateLimited
	case errors.Is(err, accounts.ErrAuth), errors.Is(err, account.ErrLoginFailed), errors.Is(err, accounts.ErrTaken):
		return metrics.OutcomeFailure
	}
	return metrics.OutcomeError
}

// CommitObserver returns the store.Options.OnCommit hook that feeds m's
// commit latency and batch size histograms. It is nil for a nil m, which
// the store takes as no hook.
func CommitObserver(m *metrics.Metrics) func(store.CommitInfo) {
	if m == nil {
		return nil
	}
	return func(ci store.CommitInfo) { m.ObserveCommit(ci.Ops, ci.Duration, ci.Err != nil) }
}

// storeTotalsAge is how long a scrape reuses the store totals: not at
// all, since the bbolt store keeps them as running sums (store.Bolt.Totals
// reads no record) and PostgreSQL's sum over the mailboxes table is one
// query per scrape.
const storeTotalsAge = 0

// WatchStore registers the store-wide queue gauges of st on m (messages
// and bytes held, mailboxes, the writer's queue). Call it again after
// reopening the store; the gauges then read the new one. A store without
// Totals (neither bbolt nor PostgreSQL) registers nothing; the gauges of
// the bbolt writer (queue, idempotency keys, unreadable messages) are
// zero for a store without Stats.
func WatchStore(m *metrics.Metrics, st store.Store) {
	tot, ok := st.(interface {
		Totals(context.Context) (store.Totals, error)
	})
	if !ok {
		return
	}
	stats, _ := st.(interface{ Stats() store.Stats })
	m.WatchStore(func() (metrics.StoreTotals, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t, err := tot.Totals(ctx)
		if err != nil {
			return metrics.StoreTotals{}, err
		}
		out := metrics.StoreTotals{Mailboxes: t.Mailboxes, Messages: t.Messages, Bytes: t.Bytes}
		if stats != nil {
			s := stats.Stats()
			out.WriterQueue, out.IdempotencyKeys, out.Unreadable = s.Queued, s.IdempotencyKeys, s.Unreadable
		}
		return out, nil
	}, storeTotalsAge)
}
