package account

import (
	"errors"
	"fmt"
	"slices"

	"github.com/bytemare/opaque"
)

// KSFParams are the Argon2id parameters of the client's key stretching
// (RFC 9807 §10.8). They are not sent: registration and every login of an
// account must use the same values.
type KSFParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKSF is the key stretching of every production client: the
// Argon2id defaults of the library (github.com/bytemare/ksf), time 3,
// 64 MiB, 4 lanes. RFC 9807 §8 leaves the choice to the application; this
// costs a phone a fraction of a second per login, once per device.
var DefaultKSF = KSFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// ClientOption adjusts a client flow.
type ClientOption func(*clientConfig)

type clientConfig struct{ ksf KSFParams }

// WithKSF replaces DefaultKSF. It exists for tests and benchmarks, which
// cannot afford 64 MiB of Argon2id per login; a production client that
// used it would lock its users out of accounts registered elsewhere.
func WithKSF(p KSFParams) ClientOption { return func(c *clientConfig) { c.ksf = p } }

func newClientConfig(opts []ClientOption) clientConfig {
	c := clientConfig{ksf: DefaultKSF}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// options always spells the KSF parameters out, so that production and
// test clients take the same path through the library.
func (c clientConfig) options() *opaque.ClientOptions {
	return &opaque.ClientOptions{
		KSFParameters: []uint64{uint64(c.ksf.Time), uint64(c.ksf.MemoryKiB), uint64(c.ksf.Threads)},
	}
}

// registration is the client half of RFC 9807 §5 shared by Registration
// and PasswordChange.
type registration struct {
	client         *opaque.Client
	conf           clientConfig
	username       string
	serverIdentity []byte
	done           bool
}

// newClient checks what a registration or a login starts from and makes
// its OPAQUE client; it returns the normalized username.
func newClient(username string, password, serverIdentity []byte) (string, *opaque.Client, error) {
	u, err := NormalizeUsername(username)
	if err != nil {
		return "", nil, err
	}
	if len(password) == 0 || len(serverIdentity) == 0 {
		return "", nil, errors.New("account: empty password or server identity")
	}
	c, err := Configuration().Client()
	if err != nil {
		return "", nil, fmt.Errorf("account: opaque client: %w", err)
	}
	return u, c, nil
}

func startRegistration(username string, password, serverIdentity []byte, opts []ClientOption) (*registration, []byte, error) {
	u, c, err := newClient(username, password, serverIdentity)
	if err != nil {
		return nil, nil, err
	}
	// RFC 9807 §5.2.1 CreateRegistrationRequest: blind the password.
	req, err := c.RegistrationInit(password)
	if err != nil {
		return nil, nil, fmt.Errorf("account: registration request: %w", err)
	}
	r := &registration{
		client:         c,
		conf:           newClientConfig(opts),
		username:       u,
		serverIdentity: slices.Clone(serverIdentity),
	}
	return r, req.Serialize(), nil
}

// finish runs RFC 9807 §5.2.3 FinalizeRegistrationRequest on the body of a
// RegisterResponse, with client_identity = username and server_identity
// as given (§10.3: both are then bound into the envelope).
func (r *registration) finish(registerResponse []byte) (record, exportKey []byte, err error) {
	if r.done {
		return nil, nil, errors.New("account: registration already finished")
	}
	r.done = true
	defer r.client.ClearState()
	m, err := UnmarshalRegisterResponse(registerResponse)
	if err != nil {
		return nil, nil, err
	}
	resp, err := r.client.Deserialize.RegistrationResponse(m.Response)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: registration response: %w", ErrMalformed, err)
	}
	rec, exportKey, err := r.client.RegistrationFinalize(resp, []byte(r.username), r.serverIdentity, r.conf.options())
	if err != nil {
		return nil, nil, fmt.Errorf("account: finalize registration: %w", err)
	}
	return rec.Serialize(), exportKey, nil
}

// Registration is the client side of one account registration.
type Registration struct{ r *registration }

// ClientRegister starts registering username with password at the server
// whose OPAQUE server_identity is serverIdentity. It returns the flow and
// the RegisterStart body to send.
func ClientRegister(username string, password, serverIdentity []byte, opts ...ClientOption) (*Registration, []byte, error) {
	r, req, err := startRegistration(username, password, serverIdentity, opts)
	if err != nil {
		return nil, nil, err
	}
	body, err := (&RegisterStart{Username: r.username, Request: req}).Marshal()
	if err != nil {
		return nil, nil, err
	}
	return &Registration{r}, body, nil
}

// Finish takes the RegisterResponse body and returns the RegisterFinish
// body for device, and the RFC 9807 export_key (§10.4), which only the
// client can compute; the SDK may use it to encrypt state it stores
// elsewhere.
func (g *Registration) Finish(registerResponse []byte, device DeviceID, deviceName string) (registerFinish, exportKey []byte, err error) {
	rec, exportKey, err := g.r.finish(registerResponse)
	if err != nil {
		return nil, nil, err
	}
	body, err := (&RegisterFinish{Record: rec, Device: device, DeviceName: deviceName}).Marshal()
	if err != nil {
		return nil, nil, err
	}
	return body, exportKey, nil
}

// PasswordChange is the client side of a password change: a fresh
// registration of the same username (RFC 9807 §8) under a session.
type PasswordChange struct {
	r       *registration
	session Token
}

// ClientChangePassword starts replacing the password of username, logged
// in with session. It returns the flow and the ChangePasswordStart body.
func ClientChangePassword(session Token, username string, newPassword, serverIdentity []byte, opts ...ClientOption) (*PasswordChange, []byte, error) {
	r, req, err := startRegistration(username, newPassword, serverIdentity, opts)
	if err != nil {
		return nil, nil, err
	}
	body, err := (&ChangePasswordStart{Session: session, Request: req}).Marshal()
	if err != nil {
		return nil, nil, err
	}
	return &PasswordChange{r: r, session: session}, body, nil
}

// Finish takes the RegisterResponse body and returns the
// ChangePasswordFinish body and the new export_key.
func (p *PasswordChange) Finish(registerResponse []byte) (changePasswordFinish, exportKey []byte, err error) {
	rec, exportKey, err := p.r.finish(registerResponse)
	if err != nil {
		return nil, nil, err
	}
	body, err := (&ChangePasswordFinish{Session: p.session, Record: rec}).Marshal()
	if err != nil {
		return nil, nil, err
	}
	return body, exportKey, nil
}

// Login is the client side of one login (RFC 9807 §6).
type Login struct {
	client         *opaque.Client
	conf           clientConfig
	username       string
	serverIdentity []byte
	done           bool
}

// ClientLogin starts logging in as username. It returns the flow and the
// LoginStart body (RFC 9807 §6.2.1 GenerateKE1).
func ClientLogin(username string, password, serverIdentity []byte, opts ...ClientOption) (*Login, []byte, error) {
	u, c, err := newClient(username, password, serverIdentity)
	if err != nil {
		return nil, nil, err
	}
	ke1, err := c.GenerateKE1(password)
	if err != nil {
		return nil, nil, fmt.Errorf("account: KE1: %w", err)
	}
	body, err := (&LoginStart{Username: u, KE1: ke1.Serialize()}).Marshal()
	if err != nil {
		return nil, nil, err
	}
	return &Login{client: c, conf: newClientConfig(opts), username: u, serverIdentity: slices.Clone(serverIdentity)}, body, nil
}

// Finish takes the LoginResponse body, authenticates the server and
// recovers the client's key (RFC 9807 §6.2.3 GenerateKE3, with
// client_identity = username), and returns the LoginFinish body for
// device, the OPAQUE session key and the export_key. ErrLoginFailed means
// a wrong password, an unknown username or a wrong server; in that case
// nothing must be sent (RFC 9807 §6.4.3).
func (l *Login) Finish(loginResponse []byte, device DeviceID, deviceName string) (loginFinish, sessionKey, exportKey []byte, err error) {
	if l.done {
		return nil, nil, nil, errors.New("account: login already finished")
	}
	l.done = true
	defer l.client.ClearState()
	m, err := UnmarshalLoginResponse(loginResponse)
	if err != nil {
		return nil, nil, nil, err
	}
	ke2, err := l.client.Deserialize.KE2(m.KE2)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: KE2: %w", ErrMalformed, err)
	}
	ke3, sessionKey, exportKey, err := l.client.GenerateKE3(ke2, []byte(l.username), l.serverIdentity, l.conf.options())
	if err != nil {
		if errors.Is(err, opaque.ErrAuthentication) {
			return nil, nil, nil, ErrLoginFailed
		}
		return nil, nil, nil, fmt.Errorf("account: KE3: %w", err)
	}
	body, err := (&LoginFinish{KE3: ke3.Serialize(), Device: device, DeviceName: deviceName}).Marshal()
	if err != nil {
		return nil, nil, nil, err
	}
	return body, sessionKey, exportKey, nil
}
