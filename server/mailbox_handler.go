package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// The mailbox handlers: CreateMailbox, Send (paid), and the owner-signed
// Fetch and Subscribe. Account, key-transparency, KeyPackage and token
// requests have handlers of their own (account_handler.go, kt_handler.go,
// keypackages.go, tokens.go).

func (s *Server) createMailbox(ctx context.Context, binding []byte, m *wire.CreateMailbox) (wire.Message, error) {
	if !wire.Verify(m, ed25519.PublicKey(m.OwnerKey[:]), binding) {
		return nil, wire.Errorf(wire.CodeUnauthorized, "owner signature does not verify")
	}
	spend, err := s.opts.Authorizer.AuthorizeCreate(ctx, m.Auth)
	if err != nil {
		s.countTokenRejection(err)
		return nil, authError(err)
	}
	// A collision of two random 256-bit IDs does not happen; a retry keeps
	// the code honest about ErrExists anyway.
	for range 3 {
		mb := store.Mailbox{OwnerKey: m.OwnerKey, Created: s.opts.Now()}
		rand.Read(mb.ReceiveID[:])
		rand.Read(mb.SendID[:])
		err := s.opts.Store.CreateMailbox(ctx, mb, spend)
		if errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			s.countTokenRejection(storeError(err))
			return nil, storeError(err)
		}
		if spend != nil {
			s.opts.Metrics.TokenRedeemed()
		}
		s.noteMailbox(ctx, mb.ReceiveID, &mb.SendID)
		return &wire.MailboxCreated{ReceiveID: mb.ReceiveID, SendID: mb.SendID}, nil
	}
	return nil, wire.Errorf(wire.CodeExists, "mailbox ID collision")
}

func (s *Server) send(ctx context.Context, cs *connState, m *wire.Send) (wire.Message, error) {
	if len(m.Envelope) > int(s.limits.MaxEnvelope) {
		return nil, wire.Errorf(wire.CodeTooLarge, "envelope of %d bytes exceeds %d", len(m.Envelope), s.limits.MaxEnvelope)
	}
	// An empty auth is paid from the connection's allowance when it has
	// one (allowance.go); otherwise the authorizer judges it as ever.
	credited := len(m.Auth) == 0 && cs.allowance.take(s.opts.Now())
	var spend *store.Spend
	if !credited {
		var err error
		if spend, err = s.opts.Authorizer.AuthorizeSend(ctx, m.Auth); err != nil {
			s.countTokenRejection(err)
			return nil, authError(err)
		}
	}
	res, err := s.opts.Store.Put(ctx, m.SendID, m.MessageID, m.Envelope, s.opts.Quota, s.opts.Now(), spend)
	if err != nil || (credited && res.Duplicate) {
		// Nothing was stored: the allowance pays for stored messages
		// only, as a token does.
		if credited {
			cs.allowance.refund()
		}
	}
	if err != nil {
		s.countTokenRejection(storeError(err))
		return nil, storeError(err)
	}
	s.noteMailbox(ctx, res.ReceiveID, nil)
	if !res.Duplicate {
		if spend != nil {
			// Granted before Sent is written, so a client that counts
			// from the answer never counts more than the server holds.
			cs.allowance.grant(wire.SendsPerToken-1, spend.Until)
		}
		s.hub.notify(res.ReceiveID)
		if spend != nil {
			s.opts.Metrics.TokenRedeemed()
		}
	}
	return &wire.Sent{MessageID: m.MessageID, Duplicate: res.Duplicate}, nil
}

// authorizeOwner loads the mailbox a signed request names and checks the
// owner signature against this connection's binding.
func (s *Server) authorizeOwner(ctx context.Context, binding []byte, m wire.Signed) (store.Mailbox, error) {
	mb, err := s.opts.Store.Mailbox(ctx, m.Mailbox())
	if err != nil {
		return mb, storeError(err)
	}
	if !wire.Verify(m, ed25519.PublicKey(mb.OwnerKey[:]), binding) {
		return mb, wire.Errorf(wire.CodeUnauthorized, "owner signature does not verify")
	}
	return mb, nil
}

func (s *Server) fetch(ctx context.Context, cs *connState, e *streamEntry, st Stream, m *wire.Fetch) (wire.Message, error) {
	if _, err := s.authorizeOwner(ctx, cs.binding, m); err != nil {
		return nil, err
	}
	limit := min(int(m.Limit), int(s.limits.MaxFetch))
	if s.opts.Observer != nil {
		reqOf(ctx).write() // the request goes before its deliveries
	}
	_, more, err := s.deliverFrom(ctx, cs, e, st, m.ReceiveID, m.After, limit)
	if err != nil {
		return nil, err
	}
	return &wire.FetchEnd{More: more}, nil
}

// subscribe streams the backlog after the cursor, a FetchEnd marker, then
// every new message, until the client closes the stream, the mailbox is
// deleted, a newer subscription replaces this one, the connection ends,
// or the server drains.
func (s *Server) subscribe(conn *quic.Conn, cs *connState, e *streamEntry, st Stream, m *wire.Subscribe, or *obsReq) {
	fail := func(err error) {
		s.countError(metrics.KindLabel(wire.KindSubscribe), err)
		or.fail(err)
		st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
		s.writeError(st, s.opts.Policy, err)
		st.CancelRead(0)
	}
	ctx, cancel := context.WithTimeout(st.Context(), s.opts.RequestTimeout)
	_, err := s.authorizeOwner(ctx, cs.binding, m)
	cancel()
	if err != nil {
		fail(err)
		return
	}
	if cs.subs.Add(1) > int32(s.opts.MaxSubsPerConn) {
		cs.subs.Add(-1)
		s.opts.Metrics.Refused(metrics.LimitSubscriptions)
		fail(wire.Errorf(wire.CodeRateLimited, "too many subscriptions on this connection (%d)", s.opts.MaxSubsPerConn))
		return
	}
	defer cs.subs.Add(-1)
	st.SetReadDeadline(time.Time{})
	// Register before reading the backlog so no store can slip between.
	sub, stop := s.hub.subscribe(m.ReceiveID)
	defer stop()
	if or != nil {
		or.write()
		s.observe(obsEvent{conn: cs.obsID, ev: obsSubscribe, mailbox: &m.ReceiveID})
	}
	// failLate answers a subscription that was running with an Error.
	failLate := func(err error) {
		if or != nil {
			s.observe(obsEvent{conn: cs.obsID, ev: obsError, kind: or.e.kind, code: obsCode(err)})
		}
		st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
		s.writeError(st, s.opts.Policy, err)
	}
	// The client ends a subscription by closing its side; a read that
	// returns tells us so. Anything it sends meanwhile is dropped through
	// a small buffer.
	clientGone := make(chan struct{})
	go func() {
		var b [64]byte
		for {
			if _, err := st.Read(b[:]); err != nil {
				break
			}
		}
		close(clientGone)
	}()
	defer st.CancelRead(0) // ends that reader, whoever ends the subscription
	cursor, marked := m.After, false
	for {
		var more bool
		var err error
		for more = true; more; {
			cursor, more, err = s.deliverFrom(st.Context(), cs, e, st, m.ReceiveID, cursor, math.MaxInt)
			if err != nil {
				if _, coded := wire.CodeOf(err); coded {
					failLate(err)
				}
				return
			}
		}
		if !marked {
			st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
			if wire.WriteMessage(st, s.opts.Policy, &wire.FetchEnd{}) != nil {
				return
			}
			marked = true
		}
		select {
		case <-sub.wake:
		case <-sub.gone:
			// The stream may have idled past its last deadline: give the
			// closing record a fresh one, or it is lost (failLate does).
			failLate(wire.Errorf(wire.CodeNotFound, "mailbox deleted"))
			return
		case <-sub.replaced:
			s.opts.Metrics.Refused(metrics.LimitSubscriptions)
			failLate(wire.Errorf(wire.CodeRateLimited, "a newer subscription to this mailbox replaced this one"))
			return
		case <-clientGone:
			return
		case <-conn.Context().Done():
			return
		case <-s.subsCtx.Done():
			failLate(wire.Errorf(wire.CodeUnavailable, "server shutting down"))
			return
		}
	}
}

func toStoreIDs(ids []wire.MessageID) [][store.MessageIDSize]byte {
	out := make([][store.MessageIDSize]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// storeError maps store errors to protocol codes (docs/protocol.md §6).
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return wire.Errorf(wire.CodeNotFound, "no such mailbox")
	case errors.Is(err, store.ErrQuotaCount):
		return wire.Errorf(wire.CodeQuota, "mailbox holds too many messages")
	case errors.Is(err, store.ErrQuotaBytes):
		return wire.Errorf(wire.CodeQuota, "mailbox holds too many bytes")
	case errors.Is(err, store.ErrTooLarge):
		return wire.Errorf(wire.CodeTooLarge, "envelope too large")
	case errors.Is(err, store.ErrExists):
		return wire.Errorf(wire.CodeExists, "mailbox exists")
	case errors.Is(err, store.ErrSpent):
		return wire.Errorf(wire.CodeTokenSpent, "token already spent")
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrStorageFailed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %w", wire.Errorf(wire.CodeUnavailable, "storage unavailable, retry later"), err)
	}
	return err
}

func authError(err error) error {
	if _, ok := wire.CodeOf(err); ok {
		return err
	}
	return fmt.Errorf("%w: %w", wire.Errorf(wire.CodeForbidden, "not authorized"), err)
}
