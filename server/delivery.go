package server

import (
	"context"
	"fmt"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/config"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/sync/semaphore"
)

// Delivery memory (docs/operations.md "Limits"). Fetch
// and Subscribe read the store a page at a time and write each page out
// before loading the next. Before a page is loaded its worst case (page
// messages × the longest deliverable envelope, plus one record buffer) is
// reserved from its connection's budget and from the server's; what the
// loaded envelopes do not use is handed back at once, and each envelope's
// share as soon as its record is written. A client that stops reading
// holds at most its connection's budget, however many streams it opens;
// all clients together hold at most the server's. A stream that cannot
// get its page within RequestTimeout is answered UNAVAILABLE.
const (
	// deliveryPageBytes sizes a page: as many of the longest envelopes
	// as fit (at least one). Four with the default policy.
	deliveryPageBytes = 512 << 10

	// DefaultMaxSubsPerMailbox is how many subscriptions one mailbox
	// keeps; a newer one replaces the oldest.
	DefaultMaxSubsPerMailbox = 4
	// DefaultMaxSubsPerConn is how many subscriptions one connection may
	// hold; one more is refused with RATE_LIMITED.
	DefaultMaxSubsPerConn = 32
)

func (o *Options) setDeliveryDefaults() {
	orDefault(&o.DeliveryBytes, config.DefaultDeliveryBytes)
	orDefault(&o.DeliveryConnBytes, config.DefaultDeliveryConnBytes)
	orDefault(&o.MaxSubsPerMailbox, DefaultMaxSubsPerMailbox)
	orDefault(&o.MaxSubsPerConn, DefaultMaxSubsPerConn)
}

// deliveryPage returns how many messages a page holds, or an error if the
// budgets cannot hold even a page of one message.
func deliveryPage(o *Options) (msgs int, err error) {
	maxEnv := int64(MaxDeliverable(o.Policy))
	if one := maxEnv + int64(o.Policy.Max()); one > o.DeliveryConnBytes || o.DeliveryConnBytes > o.DeliveryBytes {
		return 0, fmt.Errorf("server: delivery budgets: want %d ≤ per connection (%d) ≤ total (%d): one envelope of the largest bucket and its record must fit",
			one, o.DeliveryConnBytes, o.DeliveryBytes)
	}
	msgs = int(max(1, deliveryPageBytes/maxEnv))
	for msgs > 1 && int64(msgs)*maxEnv+int64(o.Policy.Max()) > o.DeliveryConnBytes {
		msgs--
	}
	return msgs, nil
}

// connState is what the streams of one connection share.
type connState struct {
	binding  []byte              // TLS exporter: owner signatures cover it
	delivery *semaphore.Weighted // DeliveryConnBytes
	subs     atomic.Int32        // live subscriptions
	src      accounts.Source     // who the account limits count (accountSource)
	kt       ktConnBudget        // key-transparency lookup proofs (kt_handler.go)
	keys     connSources         // the source its streams count against (sources.go)
	obsID    string              // the connection's name in the observer record, "" when off
	// requestHeld is what this connection's record buffers hold of
	// RequestConnBytes (requests.go); guarded by Server.requests.mu.
	requestHeld int64
	allowance   sendAllowance // Sends a token paid for on this connection (allowance.go)
}

// reserveDelivery takes n bytes from the connection's and the server's
// delivery budgets, waiting at most RequestTimeout; give them back with
// giveBack.
func (s *Server) reserveDelivery(ctx context.Context, cs *connState, e *streamEntry, n int64) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	err := cs.delivery.Acquire(ctx, n)
	if err == nil {
		if err = s.sources.reserveDelivery(ctx, e, n); err != nil {
			cs.delivery.Release(n)
		}
	}
	if err != nil {
		if _, coded := wire.CodeOf(err); coded {
			return err // reset for a source holding less
		}
		s.opts.Metrics.Refused(metrics.LimitDeliveryBytes)
		return fmt.Errorf("%w: %w", wire.Errorf(wire.CodeUnavailable, "server busy delivering, retry later"), err)
	}
	return nil
}

func (s *Server) giveBack(cs *connState, e *streamEntry, n int64) {
	if n > 0 {
		s.sources.giveBackDelivery(e, n)
		cs.delivery.Release(n)
	}
}

// deliverFrom writes up to limit stored messages after cursor as Delivery
// records, each padded to its own bucket, a page at a time within the
// delivery budgets. It returns the cursor after the last record written
// and whether the store holds more.
func (s *Server) deliverFrom(ctx context.Context, cs *connState, e *streamEntry, st Stream, id wire.ID, cursor uint64, limit int) (uint64, bool, error) {
	for limit > 0 {
		n := min(limit, s.pageMsgs)
		reserve := int64(n)*int64(s.maxDeliverable) + int64(s.opts.Policy.Max())
		if err := s.reserveDelivery(ctx, cs, e, reserve); err != nil {
			return cursor, false, err
		}
		msgs, more, err := s.opts.Store.Fetch(ctx, id, cursor, n, s.opts.Now())
		if err != nil {
			s.giveBack(cs, e, reserve)
			return cursor, false, storeError(err)
		}
		held := int64(s.opts.Policy.Max()) // the record buffer
		for _, m := range msgs {
			held += int64(len(m.Envelope))
		}
		s.giveBack(cs, e, reserve-held)
		cursor, err = s.writePage(cs, e, st, id, msgs, cursor, &held)
		s.giveBack(cs, e, held)
		if err != nil {
			return cursor, false, err
		}
		limit -= len(msgs)
		if !more || len(msgs) < n {
			return cursor, more, nil
		}
	}
	return cursor, true, nil
}

// writePage writes one page, handing back each envelope's share of held
// as soon as its record is out.
func (s *Server) writePage(cs *connState, e *streamEntry, st Stream, id wire.ID, msgs []store.Message, cursor uint64, held *int64) (uint64, error) {
	var buf []byte
	for i := range msgs {
		msg := &msgs[i]
		var err error
		buf, err = wire.AppendMessage(buf[:0], s.opts.Policy, &wire.Delivery{
			Seq: msg.Seq, MessageID: msg.ID, ReceivedAt: uint64(msg.ReceivedAt.Unix()), Envelope: msg.Envelope,
		})
		if err != nil {
			return cursor, err
		}
		st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
		if _, err := st.Write(buf); err != nil {
			return cursor, err
		}
		if s.opts.Observer != nil {
			s.observe(obsEvent{conn: cs.obsID, ev: obsDeliver, mailbox: &id, bucket: len(buf)})
		}
		cursor = msg.Seq
		n := int64(len(msg.Envelope))
		*msg = store.Message{} // the envelope may go now
		*held -= n
		s.giveBack(cs, e, n)
	}
	return cursor, nil
}
