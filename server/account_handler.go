package server

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// accountExchange runs one account exchange on its stream
// (docs/protocol.md §4.9). Registration, login and password change take
// two client records; the server keeps their state only for the life of
// the stream, so nothing links one exchange to another.
//
// Account exchanges never touch the mailbox store, and the anonymous
// handlers (createMailbox, send) never reach s.opts.Accounts.
//
// cs.src names the connection's source for the per-source limits of
// registrations and logins (accountSource). read reads the client's next
// record from r within the request budgets (requests.go); r tells its
// size to the observer record.
//
// With the observer record on, each of the client's records is a request
// event, written when it is answered, with the account it authenticated
// as (a login's or registration's second record, device requests).
func (s *Server) accountExchange(ctx context.Context, st Stream, cs *connState, r *wire.Reader, read func() (wire.Message, error), first *wire.AccountRequest) {
	src := cs.src
	var cur *obsReq // the request event of the record being answered
	if s.opts.Observer != nil {
		cur = reqOf(ctx)
	}
	answer := func(m wire.Message, err error) bool {
		if err != nil {
			if cur != nil {
				cur.fail(err)
			} else if s.opts.Observer != nil {
				s.observe(obsEvent{conn: cs.obsID, ev: obsError, code: obsCode(err)})
			}
		} else {
			cur.write()
		}
		return s.reply(st, m, err)
	}
	noteAccount := func(acct accounts.AccountRef) {
		if cur != nil {
			cur.e.account = &acct
		}
	}
	if s.opts.Accounts == nil {
		answer(nil, wire.Errorf(wire.CodeUnavailable, "this server has no accounts"))
		return
	}
	a := s.opts.Accounts
	// reply sends m as the body of an AccountReply with op, or err.
	reply := func(op uint8, m marshaler, err error) bool {
		var body []byte
		if err == nil && m != nil {
			body, err = m.Marshal()
		}
		if err != nil {
			answer(nil, accountError(err))
			return false
		}
		return answer(&wire.AccountReply{Op: op, Body: body}, nil)
	}
	// next reads the client's second record of a two-step exchange.
	next := func(want uint8) ([]byte, bool) {
		st.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout))
		m, err := read()
		cur = nil
		if err != nil {
			if _, ok := wire.CodeOf(err); ok {
				answer(nil, err)
			}
			return nil, false
		}
		cur = s.observeRequest(cs.obsID, m, r.RecordSize())
		req, ok := m.(*wire.AccountRequest)
		if !ok || req.Op != want {
			answer(nil, wire.Errorf(wire.CodeProtocol, "expected account op %d", want))
			return nil, false
		}
		return req.Body, true
	}

	switch first.Op {
	case wire.AccountRegisterStart:
		start, err := account.UnmarshalRegisterStart(first.Body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		resp, err := a.RegisterStartFrom(ctx, src, start.Username, start.Request)
		if !reply(wire.AccountRegisterResponse, &account.RegisterResponse{Response: resp}, err) {
			s.opts.Metrics.Registration(accountOutcome(err))
			return
		}
		body, ok := next(wire.AccountRegisterFinish)
		if !ok {
			s.opts.Metrics.Registration(metrics.OutcomeAbandoned)
			return
		}
		fin, err := account.UnmarshalRegisterFinish(body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		sess, err := a.RegisterFinish(ctx, start.Username, fin.Record, fin.Device, fin.DeviceName)
		if err == nil {
			noteAccount(sess.Account)
		}
		issued := sess.Issued()
		reply(wire.AccountSessionIssued, &issued, err)
		s.opts.Metrics.Registration(accountOutcome(err))
		if err == nil {
			// Debug, not Info: every log record carries its exact time,
			// and accounts.db keeps a registration's hour only
			// (docs/threat-model.md); at the default level the log must
			// not keep more than the database.
			s.log.Debug("account registered")
		}

	case wire.AccountLoginStart:
		start, err := account.UnmarshalLoginStart(first.Body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		ke2, state, err := a.LoginStartFrom(ctx, src, start.Username, start.KE1)
		if !reply(wire.AccountLoginResponse, &account.LoginResponse{KE2: ke2}, err) {
			s.opts.Metrics.Login(accountOutcome(err))
			return
		}
		body, ok := next(wire.AccountLoginFinish)
		if !ok {
			s.opts.Metrics.Login(metrics.OutcomeAbandoned)
			return
		}
		fin, err := account.UnmarshalLoginFinish(body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		sess, err := a.LoginFinish(ctx, state, fin.KE3, fin.Device, fin.DeviceName)
		if err == nil {
			noteAccount(sess.Account)
		}
		issued := sess.Issued()
		reply(wire.AccountSessionIssued, &issued, err)
		s.opts.Metrics.Login(accountOutcome(err))

	case wire.AccountListDevices:
		m, err := account.UnmarshalListDevices(first.Body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		acct, _, err := a.Authenticate(ctx, m.Session)
		if err != nil {
			reply(0, nil, err)
			return
		}
		noteAccount(acct)
		list, err := a.DeviceList(ctx, acct)
		reply(wire.AccountDeviceList, &list, err)

	case wire.AccountRevokeDevice:
		m, err := account.UnmarshalRevokeDevice(first.Body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		acct, _, err := a.Authenticate(ctx, m.Session)
		if err == nil {
			noteAccount(acct)
			err = a.RevokeDevice(ctx, acct, m.Device)
		}
		reply(wire.AccountDone, nil, err)

	case wire.AccountChangePasswordStart:
		m, err := account.UnmarshalChangePasswordStart(first.Body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		resp, err := a.ChangePasswordStart(ctx, m.Session, m.Request)
		if !reply(wire.AccountRegisterResponse, &account.RegisterResponse{Response: resp}, err) {
			return
		}
		body, ok := next(wire.AccountChangePasswordFinish)
		if !ok {
			return
		}
		fin, err := account.UnmarshalChangePasswordFinish(body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		reply(wire.AccountDone, nil, a.ChangePasswordFinish(ctx, fin.Session, fin.Record))

	case wire.AccountDeleteAccount:
		m, err := account.UnmarshalDeleteAccount(first.Body)
		if err != nil {
			reply(0, nil, err)
			return
		}
		reply(wire.AccountDone, nil, a.DeleteAccount(ctx, m.Session))

	default:
		answer(nil, wire.Errorf(wire.CodeProtocol, "account op %d does not start an exchange", first.Op))
	}
}

// accountSource names a connection's source for the account limits
// (accounts.Source): a clearnet client's address as the connection limit
// counts it (sourceKeys: the IPv4 address, the IPv6 /64), and otherwise the
// connection itself, as over the onion service, where every client shares
// the tunnel's address and one client's failures must not shut out the
// others. The source lives only in the limiter's memory, for at most the
// failure window.
func accountSource(info ConnInfo) accounts.Source {
	if info.Transport != metrics.TransportTor {
		if p, _, ok := sourceKeys(info.RemoteAddr); ok {
			return accounts.AddressSource(p)
		}
	}
	return accounts.ConnectionSource(info.ID)
}

// reply writes one response record, or err as an Error record. It
// reports whether a success was written.
func (s *Server) reply(w io.Writer, m wire.Message, err error) bool {
	if st, ok := w.(Stream); ok {
		st.SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout))
	}
	if err != nil {
		s.countError(metrics.KindLabel(wire.KindAccountRequest), err)
		s.writeError(w, s.opts.Policy, err)
		return false
	}
	return wire.WriteMessage(w, s.opts.Policy, m) == nil
}

type marshaler interface{ Marshal() ([]byte, error) }

// accountError maps package accounts errors to protocol codes. Wrong
// password, unknown user and bad session are one code on purpose.
func accountError(err error) error {
	switch {
	case errors.Is(err, accounts.ErrAuth), errors.Is(err, account.ErrLoginFailed):
		return wire.Errorf(wire.CodeAuth, "authentication failed")
	case errors.Is(err, accounts.ErrTaken):
		return wire.Errorf(wire.CodeTaken, "username is taken")
	case errors.Is(err, accounts.ErrRateLimited):
		return wire.Errorf(wire.CodeRateLimited, "too many attempts, retry later")
	case errors.Is(err, accounts.ErrQuota):
		return wire.Errorf(wire.CodeQuota, "token quota for this epoch is used up")
	case errors.Is(err, accounts.ErrNotFound):
		return wire.Errorf(wire.CodeNotFound, "no such device")
	case errors.Is(err, accounts.ErrTooManyDevices):
		return wire.Errorf(wire.CodeTooMany, "too many devices; revoke one first")
	case errors.Is(err, accounts.ErrInvalidUsername):
		return wire.Errorf(wire.CodeProtocol, "username must be 3-32 of a-z 0-9 . _ -")
	case errors.Is(err, accounts.ErrMalformed):
		return wire.Errorf(wire.CodeProtocol, "malformed account message")
	case errors.Is(err, accounts.ErrStorage), errors.Is(err, accounts.ErrClosed):
		return wire.Errorf(wire.CodeUnavailable, "account storage unavailable, retry later")
	}
	if _, ok := wire.CodeOf(err); ok {
		return err
	}
	return err
}
