package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Key transparency (docs/key-transparency.md). Every answer is checked by
// the caller's kt.Verifier, pinned to the server's log key, VRF key and
// configuration (qpc-server kt-vkey), which also keeps the newest
// checkpoint seen: an answer under an older or inconsistent checkpoint is
// refused whatever the server says.

// KTOwner is what an account remembers about its own label: the versions
// it published (version -> SHA-256 of the value). Persist it with the
// account's other state; owner monitoring compares the log against it.
type KTOwner struct {
	Label string

	mu        sync.Mutex
	published map[uint32][32]byte
	checked   uint64 // the epoch up to which the log agreed with the owner
}

// Checked is the epoch of the last monitoring run that raised no alarm;
// the next run asks only for versions since then. Persist it with the
// published versions.
func (o *KTOwner) Checked() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.checked
}

// SetChecked restores Checked from storage.
func (o *KTOwner) SetChecked(epoch uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.checked = epoch
}

// NewKTOwner starts an owner record for label.
func NewKTOwner(label string) *KTOwner {
	return &KTOwner{Label: label, published: map[uint32][32]byte{}}
}

// Record notes that the owner published value as version.
func (o *KTOwner) Record(version uint32, value []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.published[version] = sha256.Sum256(value)
}

// Published returns a copy of the recorded versions.
func (o *KTOwner) Published() map[uint32][32]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[uint32][32]byte, len(o.published))
	for k, v := range o.published {
		out[k] = v
	}
	return out
}

// KTPublish publishes a signed binding under the session's own username
// (b.Label) and records it in owner. It is not retried: a lost reply may
// still have published.
func (c *Conn) KTPublish(ctx context.Context, s *Session, owner *KTOwner, b *kt.Binding) (version uint32, epoch uint64, err error) {
	if owner == nil || owner.Label != b.Label {
		return 0, 0, fmt.Errorf("kt publish: owner record is not for %q", b.Label)
	}
	value := b.Marshal()
	err = c.do(ctx, false, func(ctx context.Context, sess *session) error {
		m, err := c.call(ctx, sess, &wire.KTPublish{Session: s.Token, Label: b.Label, Value: value})
		if err != nil {
			return err
		}
		p, ok := m.(*wire.KTPublished)
		if !ok {
			return unexpected(m)
		}
		version, epoch = p.Version, p.Epoch
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("kt publish: %w", err)
	}
	owner.Record(version, value)
	return version, epoch, nil
}

// ktProof runs one KT request whose answer is a KTProof.
func (c *Conn) ktProof(ctx context.Context, req wire.Message) ([]byte, error) {
	var proof []byte
	err := c.do(ctx, true, func(ctx context.Context, sess *session) error {
		m, err := c.call(ctx, sess, req)
		if err != nil {
			return err
		}
		p, ok := m.(*wire.KTProof)
		if !ok {
			return unexpected(m)
		}
		proof = p.Proof
		return nil
	})
	return proof, err
}

// KTLookup returns label's current binding, verified: the VRF and map
// proofs, the epoch record's inclusion in a checkpoint consistent with the
// newest one v has seen, and the binding's own signature. A label never
// published gives a result with Version 0 and a nil binding; a deleted
// account gives its tombstone binding.
func (c *Conn) KTLookup(ctx context.Context, v *kt.Verifier, label string) (*kt.LookupResult, *kt.Binding, error) {
	res, err := c.ktLookup(ctx, v, label)
	if err != nil {
		return nil, nil, err
	}
	if res.Version == 0 {
		return res, nil, nil
	}
	b, err := kt.ParseBinding(res.Value)
	if err != nil {
		return nil, nil, fmt.Errorf("kt lookup: %w", err)
	}
	if err := b.Verify(label); err != nil {
		return nil, nil, fmt.Errorf("kt lookup: %w", err)
	}
	return res, b, nil
}

// ktLookup fetches and verifies a lookup proof; the value is not parsed.
func (c *Conn) ktLookup(ctx context.Context, v *kt.Verifier, label string) (*kt.LookupResult, error) {
	raw, err := c.ktProof(ctx, &wire.KTLookup{Label: label, KnownSize: v.KnownSize()})
	if err != nil {
		return nil, fmt.Errorf("kt lookup: %w", err)
	}
	p, err := kt.ParseLookupProof(raw)
	if err != nil {
		return nil, fmt.Errorf("kt lookup: %w", err)
	}
	res, err := v.VerifyLookup(label, p)
	if err != nil {
		return nil, fmt.Errorf("kt lookup: %w", err)
	}
	return res, nil
}

// ErrTokenKeyMismatch reports a token key that differs from the one the
// server committed in its key-transparency log for that epoch (or an
// epoch whose committed key was changed): the server may be tagging this
// client. Do not use the key.
var ErrTokenKeyMismatch = errors.New("token key does not match the key-transparency log")

// KTTokenKey checks a token epoch's public key against the one committed
// in the key-transparency log (kt.TokenKeyLabel, version 1) and returns
// nil when they are the same key.
func (c *Conn) KTTokenKey(ctx context.Context, v *kt.Verifier, key *tokens.PublicKey) error {
	res, err := c.ktLookup(ctx, v, kt.TokenKeyLabel(key.Epoch))
	if err != nil {
		return err
	}
	raw, err := key.MarshalBinary()
	if err != nil {
		return err
	}
	switch {
	case res.Version == 0:
		return fmt.Errorf("kt token key: epoch %d is not committed yet", key.Epoch)
	case res.Version != 1 || !bytes.Equal(res.Value, raw):
		return fmt.Errorf("kt token key: epoch %d: %w", key.Epoch, ErrTokenKeyMismatch)
	}
	return nil
}

// KTHistory returns every version of the session's own label since epoch
// since, verified complete, and the encoded proof (evidence for alarms).
func (c *Conn) KTHistory(ctx context.Context, v *kt.Verifier, s *Session, label string, since uint64) (*kt.History, []byte, error) {
	raw, err := c.ktProof(ctx, &wire.KTHistory{Session: s.Token, Label: label, Since: since, KnownSize: v.KnownSize()})
	if err != nil {
		return nil, nil, fmt.Errorf("kt history: %w", err)
	}
	p, err := kt.ParseHistoryProof(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("kt history: %w", err)
	}
	h, err := v.VerifyHistory(label, since, p)
	if err != nil {
		return nil, nil, fmt.Errorf("kt history: %w", err)
	}
	return h, raw, nil
}

// KTMonitor checks the owner's label: it fetches its whole verified
// history and returns an alarm, with the signed checkpoint and proof as
// evidence, for every version the owner did not publish (a key the server
// showed others in its name), every differing value, and every published
// version missing. No alarms and a nil error mean the log agrees with the
// owner.
//
// It asks for the versions since the last clean run (KTOwner.Checked):
// earlier ones were checked then, and a history answer holds at most
// kt.MaxHistoryServed versions.
func (c *Conn) KTMonitor(ctx context.Context, v *kt.Verifier, s *Session, owner *KTOwner) ([]kt.Alarm, error) {
	h, raw, err := c.KTHistory(ctx, v, s, owner.Label, owner.Checked())
	if err != nil {
		return nil, err
	}
	alarms := kt.Monitor(h, owner.Published(), raw)
	if len(alarms) == 0 {
		owner.SetChecked(h.Record.Epoch)
	}
	return alarms, nil
}

// KTCheckpoint brings v up to the server's current checkpoint, checking
// its consistency with the newest one v has seen.
func (c *Conn) KTCheckpoint(ctx context.Context, v *kt.Verifier) (*kt.Checkpoint, error) {
	raw, err := c.ktProof(ctx, &wire.KTConsistency{Old: v.KnownSize()})
	if err != nil {
		return nil, fmt.Errorf("kt checkpoint: %w", err)
	}
	p, err := kt.ParseConsistencyProof(raw)
	if err != nil {
		return nil, fmt.Errorf("kt checkpoint: %w", err)
	}
	cp, err := v.VerifyConsistency(p)
	if err != nil {
		return nil, fmt.Errorf("kt checkpoint: %w", err)
	}
	return cp, nil
}

// KTConsistencyProof fetches the proof that the log of size old is a
// prefix of the server's current one, to compare a checkpoint another
// client gossiped (kt.Verifier.CompareCheckpoint) without trusting it.
func (c *Conn) KTConsistencyProof(ctx context.Context, old uint64) (*kt.ConsistencyProof, error) {
	raw, err := c.ktProof(ctx, &wire.KTConsistency{Old: old})
	if err != nil {
		return nil, fmt.Errorf("kt consistency: %w", err)
	}
	return kt.ParseConsistencyProof(raw)
}

// KTTile fetches one tlog-tiles resource of the log ("checkpoint",
// "tile/<L>/<N>[.p/<W>]", "tile/entries/<N>[.p/<W>]") over QUIC: the
// bytes the server's HTTP listener serves, for clients that only reach
// the QUIC listener (an onion service, say). Check them yourself.
func (c *Conn) KTTile(ctx context.Context, path string) ([]byte, error) {
	var data []byte
	err := c.do(ctx, true, func(ctx context.Context, sess *session) error {
		m, err := c.call(ctx, sess, &wire.KTTile{Path: path})
		if err != nil {
			return err
		}
		t, ok := m.(*wire.KTTileData)
		if !ok {
			return unexpected(m)
		}
		data = t.Data
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kt tile: %w", err)
	}
	return data, nil
}

// KTDeleteAccount deletes the account after publishing tombstone (a
// binding with Tombstone set, signed by the account's identity key) as
// its label's last version, so lookups show the account gone rather than
// its last keys.
func (c *Conn) KTDeleteAccount(ctx context.Context, s *Session, owner *KTOwner, tombstone *kt.Binding) error {
	if !tombstone.Tombstone {
		return fmt.Errorf("kt delete account: the binding is not a tombstone")
	}
	if _, _, err := c.KTPublish(ctx, s, owner, tombstone); err != nil {
		return err
	}
	return c.DeleteAccount(ctx, s)
}

// CurrentTokenKey fetches the server's token keys and checks the current
// epoch's against the one committed in key transparency.
func (c *Conn) CurrentTokenKey(ctx context.Context, v *kt.Verifier) (*TokenKeys, error) {
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("token keys: %w", err)
	}
	if err := c.KTTokenKey(ctx, v, keys.Keys[keys.Current]); err != nil {
		return nil, err
	}
	return keys, nil
}

// WaitTokenKey waits until the server at addr answers and its current
// token key is committed in its key-transparency log under pin (a server
// commits it at its first epoch after starting), trying every interval
// until ctx ends, dialling with opts (MaxAttempts defaults to 1 here).
// For tools and tests that start a server.
func WaitTokenKey(ctx context.Context, addr string, pin KTPin, opts Options, interval time.Duration) error {
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 1
	}
	var last error
	for {
		last = func() error {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if a, err := wire.ParseAddress(addr); opts.Tor != nil || (err == nil && a.Onion()) {
				cancel()
				actx, cancel = context.WithTimeout(ctx, 2*time.Minute)
			}
			defer cancel()
			c, err := Dial(actx, addr, opts)
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := kt.NewVerifier(pin.VKey, pin.VRFKey, pin.ConfigHash)
			if err != nil {
				return err
			}
			_, err = c.CurrentTokenKey(actx, v)
			return err
		}()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w", last)
		case <-time.After(interval):
		}
	}
}
