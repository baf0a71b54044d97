package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
)

// One-time KeyPackages (docs/protocol.md §4.12).
//
// A Welcome is sealed to the init key of the KeyPackage its member was
// added with. If every contact used the last-resort KeyPackage published
// in key transparency, every Welcome to a user would be sealed to the same
// key for months, and whoever later obtained it could open all of them.
// So each account keeps a pool of one-time KeyPackages on the server
// (shared by its devices, each of which can open only its own):
// refillKeyPackages uploads them on the account session and keeps their
// private keys in the local state; a contact starting a conversation takes
// one anonymously (paying a delivery token, on a connection of its own),
// checks it against key transparency exactly like the last-resort one,
// and falls back to the last-resort one when the pool is empty, the server
// does not offer pools, or what it returned does not check out. A Welcome
// to a one-time KeyPackage deletes its private keys in the transaction
// that records the join (RFC 9420 §16.8: a KeyPackage is used once).

const (
	// bucketOneTimeKPs holds the private side of the uploaded one-time
	// KeyPackages, keyed by KeyPackageRef (RFC 9420 §5.2).
	bucketOneTimeKPs = "onetime-kps"
	// oneTimeTarget is how many KeyPackages a refill fills the server's
	// pool to (at most the server's limit); oneTimeLow is the count
	// below which a login or a join refills it.
	oneTimeTarget = 20
	oneTimeLow    = 10
	// oneTimeLifetime is the validity of a one-time KeyPackage. Its
	// private keys are dropped when it expires, used or not.
	oneTimeLifetime = 60 * 24 * time.Hour
	// oneTimeKeep bounds the private keys kept: someone with tokens can
	// drain the pool again and again, and each refill would otherwise
	// add keys that no Welcome will ever use, until they expire. Past
	// it, the oldest go first (a Welcome to one of them then fails, and
	// its sender must add the user again).
	oneTimeKeep = 200
)

// oneTimeKP is the stored private side of one uploaded KeyPackage.
type oneTimeKP struct {
	KeyPackage []byte
	InitPriv   []byte
	EncPriv    []byte
	NotAfter   time.Time
}

// refillKeyPackages tops up the account's pool of one-time KeyPackages on
// the server when it holds fewer than oneTimeLow, and drops the private
// keys of expired ones. It needs a live session; without one it does
// nothing. The caller holds c.op.
func (c *Client) refillKeyPackages(ctx context.Context) error {
	now := c.opts.Now()
	if err := c.store.Update(func(tx *state.Tx) error { return pruneKPs(tx, now, oneTimeKeep) }); err != nil {
		return fmt.Errorf("one-time key packages: %w", err)
	}
	s := c.prof.Session
	if s == nil || !now.Before(s.Expiry) || c.prof.Handle == "" {
		return nil
	}
	defer c.closeAccount()
	acct, err := c.conn(ctx, connAccount)
	if err != nil {
		return fmt.Errorf("one-time key packages: %w", err)
	}
	count, limit, err := acct.UploadKeyPackages(ctx, s, nil)
	if err != nil {
		return fmt.Errorf("one-time key packages: %w", err)
	}
	want := min(oneTimeTarget, limit) - count
	if count >= oneTimeLow || want <= 0 {
		return nil
	}
	// Private keys first: a KeyPackage the server holds without its
	// private keys here would make a Welcome unopenable, while keys
	// stored for an upload that failed only wait for their expiry.
	var raws [][]byte
	err = c.store.Update(func(tx *state.Tx) error {
		for range want {
			kpp, err := mls.NewKeyPackage(c.mlsIdentity(), &mls.KeyPackageOptions{Lifetime: oneTimeLifetime, Now: c.opts.Now})
			if err != nil {
				return err
			}
			raw, err := kpp.KeyPackage.Marshal()
			if err != nil {
				return err
			}
			ref, err := kpp.KeyPackage.Ref()
			if err != nil {
				return err
			}
			rec := oneTimeKP{KeyPackage: raw, InitPriv: kpp.InitPriv, EncPriv: kpp.EncryptionPriv, NotAfter: now.Add(oneTimeLifetime)}
			if err := putJSON(tx, bucketOneTimeKPs, ref, rec); err != nil {
				return err
			}
			raws = append(raws, raw)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("one-time key packages: %w", err)
	}
	for chunk := range slices.Chunk(raws, maxUploadKPs) {
		if _, _, err := acct.UploadKeyPackages(ctx, s, chunk); err != nil {
			return fmt.Errorf("one-time key packages: %w", err)
		}
	}
	return nil
}

// refillKeyPackagesQuietly runs refillKeyPackages where a failure must not fail
// the operation it follows (registration, login, a join): contacts then
// use the last-resort KeyPackage, as with a server that has no pools, and
// the next login or join tries again.
func (c *Client) refillKeyPackagesQuietly(ctx context.Context) {
	if err := c.refillKeyPackages(ctx); err != nil {
		c.log.Debug("could not top up the one-time key packages", "err", err)
	}
}

// maxUploadKPs is how many KeyPackages one upload carries (the wire limit).
const maxUploadKPs = 10

// pruneKPs drops the private keys of expired one-time KeyPackages and,
// past keep, those that expire first.
func pruneKPs(tx *state.Tx, now time.Time, keep int) error {
	type kept struct {
		key      []byte
		notAfter time.Time
	}
	var all []kept
	err := tx.ForEach(bucketOneTimeKPs, func(k, v []byte) error {
		var rec oneTimeKP
		if err := jsonUnmarshal(v, &rec); err != nil {
			return err
		}
		all = append(all, kept{bytes.Clone(k), rec.NotAfter})
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b kept) int { return a.notAfter.Compare(b.notAfter) })
	for i, k := range all {
		if !now.Before(k.notAfter) || len(all)-i > keep {
			if err := tx.Delete(bucketOneTimeKPs, k.key); err != nil {
				return err
			}
		}
	}
	return nil
}

// contactKeyPackage returns the KeyPackage to add ct with: a one-time
// KeyPackage taken from the server's pool for ct's handle if there is a
// valid one, else ct's last-resort KeyPackage from key transparency.
func (c *Client) contactKeyPackage(ctx context.Context, ct *Contact) (*mls.KeyPackage, error) {
	kp, err := c.fetchOneTimeKP(ctx, ct)
	if err == nil && kp != nil {
		return kp, nil
	}
	if err != nil {
		c.log.Debug("one-time key package unavailable; using the last-resort one", "err", err)
	}
	return c.pickKeyPackage(ct)
}

// fetchOneTimeKP takes one KeyPackage of ct's pool, on a connection of
// its own (like a key-transparency lookup, it tells the server that
// someone is about to contact the handle; nothing else on the connection
// says who). It returns nil, nil when the pool is empty.
func (c *Client) fetchOneTimeKP(ctx context.Context, ct *Contact) (*mls.KeyPackage, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := c.dial(ctx, fmt.Sprintf("%s:%d", connKPFetch, c.lookups.Add(1)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	raw, err := conn.FetchKeyPackage(ctx, ct.Handle, tok)
	if err != nil || raw == nil {
		return nil, err
	}
	kp, err := c.validKeyPackage(ct, raw)
	if err != nil {
		return nil, fmt.Errorf("the server's one-time key package for %s: %w", ct.Handle, err)
	}
	if kp.IsLastResort() {
		return nil, fmt.Errorf("the server's one-time key package for %s is a last-resort one", ct.Handle)
	}
	return kp, nil
}

// validKeyPackage decodes raw and checks it as a KeyPackage of ct: our
// suite, valid now, ct's handle as its credential, and signed by one of
// ct's device keys in key transparency (so that the server cannot hand
// out a KeyPackage of its own).
func (c *Client) validKeyPackage(ct *Contact, raw []byte) (*mls.KeyPackage, error) {
	kp := new(mls.KeyPackage)
	if err := kp.Unmarshal(raw); err != nil {
		return nil, err
	}
	if err := mls.ValidateKeyPackage(kp, DefaultSuite, c.opts.Now()); err != nil {
		return nil, err
	}
	if string(kp.LeafNode.Credential.Identity) != ct.Handle {
		return nil, errors.New("it names another handle")
	}
	if !slices.ContainsFunc(ct.DeviceKeys, func(k []byte) bool { return bytes.Equal(k, kp.LeafNode.SignatureKey) }) {
		return nil, errors.New("its signature key is not one of the handle's device keys in key transparency")
	}
	return kp, nil
}

// welcomeKeyPackage returns the private side of the KeyPackage a Welcome
// was sealed to: one of our one-time KeyPackages (ref is then its key in
// bucketOneTimeKPs, to delete once the join is recorded) or, if the
// Welcome names none of them, the last-resort KeyPackage (ref nil).
func (c *Client) welcomeKeyPackage(welcome []byte) (kpp *mls.KeyPackagePrivate, ref []byte, err error) {
	var m mls.MLSMessage
	if err := m.Unmarshal(welcome); err != nil {
		return nil, nil, fmt.Errorf("welcome: %w", err)
	}
	if m.WireFormat != mls.WireFormatWelcome || m.Welcome == nil {
		return nil, nil, fmt.Errorf("welcome: %w", mls.ErrUnexpectedMessage)
	}
	var rec oneTimeKP
	err = c.store.View(func(tx *state.Tx) error {
		for _, s := range m.Welcome.Secrets {
			err := getJSON(tx, bucketOneTimeKPs, s.NewMember, &rec)
			if errors.Is(err, state.ErrNoEntry) {
				continue
			}
			if err != nil {
				return err
			}
			ref = bytes.Clone(s.NewMember)
			return nil
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if ref == nil {
		kpp, err := c.keyPackagePrivate()
		return kpp, nil, err
	}
	kpp = &mls.KeyPackagePrivate{InitPriv: rec.InitPriv, EncryptionPriv: rec.EncPriv, Identity: c.mlsIdentity()}
	if err := kpp.KeyPackage.Unmarshal(rec.KeyPackage); err != nil {
		return nil, nil, fmt.Errorf("%w: stored one-time key package", ErrCorruptState)
	}
	return kpp, ref, nil
}
