package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/wire"
)

// keyPackageLifetime is the validity of the last-resort KeyPackage each
// device publishes; Login replaces it when less than a third is left.
const keyPackageLifetime = 180 * 24 * time.Hour

// Register creates the account handle on the server (OPAQUE: the server
// never sees password), makes this device's identity key, MLS signature
// key, last-resort KeyPackage and intro mailbox, and publishes them in key
// transparency. A Register that failed after the account was created can
// be run again with the same handle and password to finish.
func (c *Client) Register(ctx context.Context, handle string, password []byte) error {
	c.op.Lock()
	defer c.op.Unlock()
	defer c.closeAccount()
	if err := content.ValidHandle(handle); err != nil {
		return fmt.Errorf("handle %q: use 3-32 characters of a-z 0-9 . _ -", handle)
	}
	p := c.prof
	if p.Handle != "" && p.Handle != handle {
		return fmt.Errorf("this device is already registered as %s", p.Handle)
	}
	if p.Handle == "" {
		acct, err := c.conn(ctx, connAccount)
		if err != nil {
			return err
		}
		if _, err := rand.Read(p.Device[:]); err != nil {
			return err
		}
		sess, err := acct.Register(ctx, handle, password, p.Device, "qpc")
		if err != nil {
			if code, ok := wire.CodeOf(err); ok && code == wire.CodeTaken {
				return fmt.Errorf("the handle %s is taken: choose another", handle)
			}
			return fmt.Errorf("register: %w", err)
		}
		if err := c.newIdentity(handle); err != nil {
			return err
		}
		p.Session = sess
		if err := c.saveProfile(); err != nil {
			return err
		}
	} else if p.Session == nil {
		if err := c.login(ctx, password); err != nil {
			return err
		}
	}
	if len(p.KTPublished) > 0 {
		return fmt.Errorf("already registered as %s", handle)
	}
	if err := c.publish(ctx); err != nil {
		return err
	}
	c.refillKeyPackagesQuietly(ctx)
	return nil
}

// newIdentity makes the device's keys for handle.
func (c *Client) newIdentity(handle string) error {
	p := c.prof
	_, idKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	id, err := mls.NewBasicIdentity(DefaultSuite, []byte(handle))
	if err != nil {
		return err
	}
	p.Handle, p.IdentityKey, p.MLSSuite = handle, idKey, DefaultSuite
	p.MLSSigPub, p.MLSSigPriv = id.SignaturePub, id.SignaturePriv
	return c.newKeyPackage()
}

func (c *Client) newKeyPackage() error {
	p := c.prof
	kpp, err := mls.NewKeyPackage(c.mlsIdentity(), &mls.KeyPackageOptions{LastResort: true, Lifetime: keyPackageLifetime, Now: c.opts.Now})
	if err != nil {
		return err
	}
	raw, err := kpp.KeyPackage.Marshal()
	if err != nil {
		return err
	}
	p.KeyPackage, p.KPInitPriv, p.KPEncPriv = raw, kpp.InitPriv, kpp.EncryptionPriv
	return nil
}

func (c *Client) mlsIdentity() *mls.Identity {
	p := c.prof
	return &mls.Identity{
		Suite:         p.MLSSuite,
		Credential:    mls.Credential{Type: mls.CredentialTypeBasic, Identity: []byte(p.Handle)},
		SignaturePub:  p.MLSSigPub,
		SignaturePriv: p.MLSSigPriv,
	}
}

func (c *Client) keyPackagePrivate() (*mls.KeyPackagePrivate, error) {
	p := c.prof
	kpp := &mls.KeyPackagePrivate{InitPriv: p.KPInitPriv, EncryptionPriv: p.KPEncPriv, Identity: c.mlsIdentity()}
	if err := kpp.KeyPackage.Unmarshal(p.KeyPackage); err != nil {
		return nil, fmt.Errorf("%w: stored key package", ErrCorruptState)
	}
	return kpp, nil
}

// ErrCorruptState reports local state that decrypted but does not make sense.
var ErrCorruptState = errors.New("local state is inconsistent")

// publish creates the intro mailbox if there is none and publishes the
// device's binding in key transparency.
func (c *Client) publish(ctx context.Context) error {
	p := c.prof
	w, err := c.getWallet(ctx)
	if err != nil {
		return err
	}
	if p.Intro == nil {
		mb, err := c.createMailbox(ctx, connIntro)
		if err != nil {
			return fmt.Errorf("creating the intro mailbox: %w", err)
		}
		p.Intro = mb
		if err := c.saveProfile(); err != nil {
			return err
		}
	}
	sk, err := sealed.ParseMailboxPrivateKey(p.Intro.Sealing)
	if err != nil {
		return fmt.Errorf("%w: intro key", ErrCorruptState)
	}
	b := &kt.Binding{
		Label:        p.Handle,
		IdentityKeys: []ed25519.PublicKey{p.IdentityKey.Public().(ed25519.PublicKey)},
		DeviceKeys:   [][]byte{p.MLSSigPub},
		IntroSendID:  p.Intro.SendID,
		IntroKey:     sk.Public().Bytes(),
		KeyPackages:  [][]byte{p.KeyPackage},
	}
	// The token keys this wallet was shown, each checked against key
	// transparency: the newest eight epochs (kt.Binding's limit).
	b.TokenKeys = w.Commitments(8)
	if err := b.Sign(p.IdentityKey); err != nil {
		return err
	}
	acct, err := c.conn(ctx, connAccount)
	if err != nil {
		return err
	}
	owner := c.ktOwner()
	version, _, err := acct.KTPublish(ctx, p.Session, owner, b)
	var verr *protocol.KTVersionError
	if errors.As(err, &verr) {
		// Published, but not as the next version: the log holds versions
		// of our handle we did not make.
		c.raise(Alarm{Kind: AlarmKT, Detail: "your handle in the key-transparency log: " + verr.Alarm.String()})
		version, err = verr.Alarm.Version, verr
	} else if err != nil {
		return fmt.Errorf("publishing your keys: %w", err)
	}
	if p.KTPublished == nil {
		p.KTPublished = map[uint32][32]byte{}
	}
	p.KTPublished[version] = sha256.Sum256(b.Marshal())
	if serr := c.saveProfile(); serr != nil {
		return serr
	}
	return err
}

// ktOwner returns the owner record of our handle, restored from the
// profile and saving every change to it (kt.OwnerState: monitoring by
// version, publishes pending until the log shows them).
func (c *Client) ktOwner() *protocol.KTOwner {
	p := c.prof
	o := protocol.NewKTOwner(p.Handle)
	if p.KTOwner != nil {
		o.SetState(*p.KTOwner)
	} else {
		o.SetState(legacyOwnerState(p.KTPublished))
	}
	o.SetChecked(p.KTChecked)
	o.OnChange(func(st kt.OwnerState) error {
		p.KTOwner = &st
		return c.saveProfile()
	})
	return o
}

// legacyOwnerState turns the versions a profile from before monitoring by
// version recorded into an owner state: nothing verified yet, and every
// recorded publish pending with its version, in version order, so the
// first monitoring run checks the history from version 1.
func legacyOwnerState(published map[uint32][32]byte) kt.OwnerState {
	var st kt.OwnerState
	for _, v := range slices.Sorted(maps.Keys(published)) {
		st.Pending = append(st.Pending, kt.PendingPublish{Hash: published[v], Version: v})
	}
	return st
}

// convMailbox is the receive mailbox of a new conversation: a fresh one,
// or the intro mailbox under Options.SingleMailbox (the lab's naive
// mode, which weakens privacy on purpose).
func (c *Client) convMailbox(ctx context.Context, r *convRecord) (*mailboxRecord, error) {
	if c.opts.SingleMailbox && c.prof.Intro != nil {
		mb := *c.prof.Intro
		return &mb, nil
	}
	return c.createMailbox(ctx, connForConv(r.ID))
}

// createMailbox creates a receive mailbox on the connection for role,
// paid with a token, with a fresh owner key and sealing key.
func (c *Client) createMailbox(ctx context.Context, role string) (*mailboxRecord, error) {
	// The token first: a one-shot run may still refill before it opens
	// the mailbox's connection (refillBeforeSending).
	tok, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := c.conn(ctx, role)
	if err != nil {
		return nil, err
	}
	mb, err := conn.CreateMailbox(ctx, tok)
	if err != nil {
		return nil, err
	}
	sk, err := sealed.GenerateMailboxKey()
	if err != nil {
		return nil, err
	}
	raw, err := sk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return &mailboxRecord{ReceiveID: mb.ReceiveID, SendID: mb.SendID, OwnerKey: mb.Key, Sealing: raw}, nil
}

// Login opens a new account session on this device (after Logout, or
// when the session expired). It also renews the published KeyPackage when
// it nears its end.
func (c *Client) Login(ctx context.Context, password []byte) error {
	c.op.Lock()
	defer c.op.Unlock()
	defer c.closeAccount()
	if c.prof.Handle == "" {
		return ErrNotRegistered
	}
	if err := c.login(ctx, password); err != nil {
		return err
	}
	defer c.refillKeyPackagesQuietly(ctx)
	var kp mls.KeyPackage
	if err := kp.Unmarshal(c.prof.KeyPackage); err == nil {
		left := time.Unix(int64(kp.LeafNode.Lifetime.NotAfter), 0).Sub(c.opts.Now())
		if left < keyPackageLifetime/3 || len(c.prof.KTPublished) == 0 {
			if left < keyPackageLifetime/3 {
				if err := c.newKeyPackage(); err != nil {
					return err
				}
			}
			return c.publish(ctx)
		}
	}
	return nil
}

func (c *Client) login(ctx context.Context, password []byte) error {
	acct, err := c.conn(ctx, connAccount)
	if err != nil {
		return err
	}
	sess, err := acct.Login(ctx, c.prof.Handle, password, c.prof.Device, "qpc")
	if err != nil {
		if code, ok := wire.CodeOf(err); ok && code == wire.CodeAuth {
			return fmt.Errorf("login failed: wrong handle or password")
		}
		return fmt.Errorf("login: %w", err)
	}
	c.prof.Session = sess
	c.wallet = nil
	return c.saveProfile()
}

// Logout forgets the account session. Tokens already in the wallet stay
// usable; conversations keep working until they run out.
func (c *Client) Logout() error {
	c.op.Lock()
	defer c.op.Unlock()
	c.prof.Session = nil
	c.wallet = nil
	c.mu.Lock()
	if acct := c.conns[connAccount]; acct != nil {
		acct.Close()
		delete(c.conns, connAccount)
	}
	c.mu.Unlock()
	return c.saveProfile()
}

// getWallet opens the token wallet. It keeps no account connection: each
// refill, and each token-key check, dials one of its own for the exchange
// and closes it afterwards, at a moment apart from the anonymous dials
// (accountExchange). Every token key it refills under is checked against
// key transparency, the clock and the keys it remembers (Wallet.Key); a
// mismatch is an AlarmTokenKey. The key is checked when the wallet
// refills, and at the start of a run that need not refill on a
// connection without the session (RefillIfEmpty, checkTokenKey).
func (c *Client) getWallet(ctx context.Context) (*protocol.Wallet, error) {
	if c.wallet != nil {
		return c.wallet, nil
	}
	s := c.prof.Session
	opts := c.walletOptions()
	live := s != nil && c.opts.Now().Before(s.Expiry)
	if live {
		opts.Account = c.accountExchange
	} else {
		s = nil
	}
	w, err := protocol.NewWallet(walletStore{c.store}, nil, s, opts)
	if err != nil {
		return nil, err
	}
	if live {
		c.wallet = w
	}
	return w, nil
}

// token takes one delivery token from the wallet. It never refills after
// a send (refillBeforeSending).
func (c *Client) token(ctx context.Context) ([]byte, error) {
	w, err := c.getWallet(ctx)
	if err != nil {
		return nil, err
	}
	if !w.CanRefill() && w.Len() == 0 {
		if c.prof.Session == nil {
			return nil, fmt.Errorf("no delivery tokens left and %w", ErrNoSession)
		}
		return nil, fmt.Errorf("no delivery tokens left and the session expired: run `qpc login`")
	}
	if err := c.refillBeforeSending(ctx, w, 1); err != nil {
		return nil, err
	}
	return w.Take(ctx)
}
