package protocol

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Session is a logged-in account session on one device. It pays for token
// issuance and manages the account; it never travels with a send, a fetch
// or a mailbox creation. Keep it secret.
//
// Use a separate Conn (ideally a separate Tor circuit) for account
// requests and for anonymous traffic: requests on one connection are
// trivially linkable by the server.
type Session struct {
	Token  account.Token
	Expiry time.Time
	Device account.DeviceID
}

// ServerIdentity is the OPAQUE server identity of this server: its pin.
// Both sides bind it into every registration and login (RFC 9807 §4).
func (c *Conn) ServerIdentity() []byte {
	pin := c.pin
	return pin[:]
}

// accountExchange runs one account exchange on a fresh stream: the first
// request, then one further request per step, each built from the previous
// reply. It returns the last reply body. Exchanges are never retried: each
// step may have changed server state.
func (c *Conn) accountExchange(ctx context.Context, first []byte, firstOp uint8, steps ...func(reply []byte) (uint8, []byte, error)) ([]byte, error) {
	var last []byte
	err := c.do(ctx, false, func(ctx context.Context, s *session) error {
		st, r, err := c.roundTrip(ctx, s, &wire.AccountRequest{Op: firstOp, Body: first})
		if err != nil {
			return err
		}
		defer st.CancelRead(0)
		reply, err := readAccountReply(r)
		if err != nil {
			return err
		}
		for _, step := range steps {
			op, body, err := step(reply)
			if err != nil {
				st.CancelWrite(0)
				return err
			}
			if err := c.write(c.tap(st), s.hello.Policy, &wire.AccountRequest{Op: op, Body: body}); err != nil {
				return err
			}
			if reply, err = readAccountReply(r); err != nil {
				return err
			}
		}
		st.Close()
		last = reply
		return nil
	})
	return last, err
}

func readAccountReply(r *wire.Reader) ([]byte, error) {
	m, err := r.ReadMessage()
	if err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *wire.AccountReply:
		return m.Body, nil
	case *wire.ErrorMessage:
		return nil, m.Err()
	}
	return nil, unexpected(m)
}

func sessionFrom(body []byte, device account.DeviceID) (*Session, error) {
	si, err := account.UnmarshalSessionIssued(body)
	if err != nil {
		return nil, err
	}
	return &Session{Token: si.Token, Expiry: time.Unix(int64(si.Expiry), 0), Device: device}, nil
}

// Register creates an account and logs device in. The password never
// leaves this process: OPAQUE (RFC 9807) with Argon2id on the client.
func (c *Conn) Register(ctx context.Context, username string, password []byte, device account.DeviceID, deviceName string, opts ...account.ClientOption) (*Session, error) {
	reg, start, err := account.ClientRegister(username, password, c.ServerIdentity(), opts...)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	body, err := c.accountExchange(ctx, start, wire.AccountRegisterStart, func(reply []byte) (uint8, []byte, error) {
		fin, _, err := reg.Finish(reply, device, deviceName)
		return wire.AccountRegisterFinish, fin, err
	})
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	return sessionFrom(body, device)
}

// Login logs device in to an existing account. A wrong password and an
// unknown username fail alike, with code AUTH.
func (c *Conn) Login(ctx context.Context, username string, password []byte, device account.DeviceID, deviceName string, opts ...account.ClientOption) (*Session, error) {
	login, start, err := account.ClientLogin(username, password, c.ServerIdentity(), opts...)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	body, err := c.accountExchange(ctx, start, wire.AccountLoginStart, func(reply []byte) (uint8, []byte, error) {
		fin, _, _, err := login.Finish(reply, device, deviceName)
		if err != nil {
			// RFC 9807 §6.4.3: on failure, send nothing further.
			return 0, nil, fmt.Errorf("%w: %w", wire.Errorf(wire.CodeAuth, "authentication failed"), err)
		}
		return wire.AccountLoginFinish, fin, nil
	})
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	return sessionFrom(body, device)
}

// Devices lists the account's devices.
func (c *Conn) Devices(ctx context.Context, s *Session) ([]account.DeviceInfo, error) {
	req, err := (&account.ListDevices{Session: s.Token}).Marshal()
	if err != nil {
		return nil, err
	}
	body, err := c.accountExchange(ctx, req, wire.AccountListDevices)
	if err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	list, err := account.UnmarshalDeviceList(body)
	if err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	return list.Devices, nil
}

// RevokeDevice ends every session of a device of the account.
func (c *Conn) RevokeDevice(ctx context.Context, s *Session, device account.DeviceID) error {
	req, err := (&account.RevokeDevice{Session: s.Token, Device: device}).Marshal()
	if err != nil {
		return err
	}
	if _, err := c.accountExchange(ctx, req, wire.AccountRevokeDevice); err != nil {
		return fmt.Errorf("revoke device: %w", err)
	}
	return nil
}

// ChangePassword replaces the password; the server revokes every other
// device's session.
func (c *Conn) ChangePassword(ctx context.Context, s *Session, username string, newPassword []byte, opts ...account.ClientOption) error {
	pc, start, err := account.ClientChangePassword(s.Token, username, newPassword, c.ServerIdentity(), opts...)
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	_, err = c.accountExchange(ctx, start, wire.AccountChangePasswordStart, func(reply []byte) (uint8, []byte, error) {
		fin, _, err := pc.Finish(reply)
		return wire.AccountChangePasswordFinish, fin, err
	})
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	return nil
}

// DeleteAccount deletes the account, its devices and sessions.
func (c *Conn) DeleteAccount(ctx context.Context, s *Session) error {
	req, err := (&account.DeleteAccount{Session: s.Token}).Marshal()
	if err != nil {
		return err
	}
	if _, err := c.accountExchange(ctx, req, wire.AccountDeleteAccount); err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	return nil
}

// TokenKeys are a server's token public keys around the current epoch.
type TokenKeys struct {
	Current uint32
	Epoch   time.Duration
	Keys    map[uint32]*tokens.PublicKey
}

// TokenKeys fetches the token public keys. It needs no session; clients
// compare them over independent paths to detect per-user keys.
func (c *Conn) TokenKeys(ctx context.Context) (*TokenKeys, error) {
	var out *TokenKeys
	err := c.do(ctx, true, func(ctx context.Context, s *session) error {
		m, err := c.call(ctx, s, &wire.TokenKeys{})
		if err != nil {
			return err
		}
		list, ok := m.(*wire.TokenKeyList)
		if !ok {
			return unexpected(m)
		}
		out = &TokenKeys{Current: list.Current, Epoch: time.Duration(list.EpochSeconds) * time.Second, Keys: map[uint32]*tokens.PublicKey{}}
		for _, k := range list.Keys {
			pk, err := tokens.ParsePublicKey(k.Key)
			if err != nil || pk.Epoch != k.Epoch {
				return wire.Errorf(wire.CodeProtocol, "malformed token key for epoch %d", k.Epoch)
			}
			out.Keys[k.Epoch] = pk
		}
		if out.Keys[out.Current] == nil {
			return wire.Errorf(wire.CodeProtocol, "no key for the current epoch")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("token keys: %w", err)
	}
	return out, nil
}

// TokenQuotaStatus is an account's token allowance on the server
// (docs/protocol.md §4.10): Quota tokens per epoch of EpochLength, of
// which Issued went to the account in the current epoch, Epoch.
type TokenQuotaStatus struct {
	Epoch       uint32        `json:"epoch"`
	EpochLength time.Duration `json:"epoch_length"`
	Quota       int           `json:"quota"`
	Issued      int           `json:"issued"`
}

// PerDay is the quota over a day: Quota scaled from the epoch length.
func (q TokenQuotaStatus) PerDay() float64 {
	if q.EpochLength <= 0 {
		return 0
	}
	return float64(q.Quota) * float64(24*time.Hour) / float64(q.EpochLength)
}

// String says the quota as people read it: "1,000 a day per account", or
// "100 per 1h epoch per account (2,400 a day)" for epochs other than a day.
func (q TokenQuotaStatus) String() string {
	if q.EpochLength == 24*time.Hour {
		return Thousands(float64(q.Quota)) + " a day per account"
	}
	return fmt.Sprintf("%s per %s epoch per account (%s a day)", Thousands(float64(q.Quota)), epochString(q.EpochLength), Thousands(q.PerDay()))
}

// Thousands formats x rounded to a whole number with comma separators,
// as token counts are printed (TokenQuotaStatus.String, the messenger's
// cover messages).
func Thousands(x float64) string {
	s := strconv.FormatFloat(math.Round(x), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// epochString is an epoch length as people say it: "1h", "30m", "90s".
func epochString(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// TokenQuota asks the server for the session's token allowance. It
// changes nothing on the server, so it is retried like Health.
func (c *Conn) TokenQuota(ctx context.Context, s *Session) (TokenQuotaStatus, error) {
	var out TokenQuotaStatus
	err := c.do(ctx, true, func(ctx context.Context, sess *session) error {
		m, err := c.call(ctx, sess, &wire.TokenQuota{Session: s.Token})
		if err != nil {
			return err
		}
		r, ok := m.(*wire.TokenQuotaStatus)
		if !ok {
			return unexpected(m)
		}
		if r.EpochSeconds == 0 {
			return wire.Errorf(wire.CodeProtocol, "token quota for an epoch of 0 seconds")
		}
		out = TokenQuotaStatus{
			Epoch: r.Epoch, EpochLength: time.Duration(r.EpochSeconds) * time.Second,
			Quota: int(r.Quota), Issued: int(r.Issued),
		}
		return nil
	})
	if err != nil {
		return TokenQuotaStatus{}, fmt.Errorf("token quota: %w", err)
	}
	return out, nil
}

// IssueTokens obtains n (≤ tokens.MaxBatch) tokens of the current epoch,
// paid from the session's quota. The tokens are checked against key, the
// epoch key the caller fetched (and ideally cross-checked) beforehand; a
// response under any other key is refused.
func (c *Conn) IssueTokens(ctx context.Context, s *Session, key *tokens.PublicKey, n int) ([]tokens.Token, error) {
	blinding, req, err := tokens.Blind(key, n)
	if err != nil {
		return nil, fmt.Errorf("issue tokens: %w", err)
	}
	raw, err := req.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("issue tokens: %w", err)
	}
	var toks []tokens.Token
	// Not retried automatically: a lost reply still consumed quota, and a
	// retry with the same blinding would be linkable.
	err = c.do(ctx, false, func(ctx context.Context, sess *session) error {
		m, err := c.call(ctx, sess, &wire.IssueTokens{Session: s.Token, Request: raw})
		if err != nil {
			return err
		}
		r, ok := m.(*wire.TokensIssued)
		if !ok {
			return unexpected(m)
		}
		resp, err := tokens.ParseTokenResponse(r.Response)
		if err != nil {
			return wire.Errorf(wire.CodeProtocol, "malformed token response")
		}
		toks, err = blinding.Finalize(resp)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("issue tokens: %w", err)
	}
	return toks, nil
}
