package protocol

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

// KTOwner is what an account remembers about its own label
// (kt.OwnerState): the last version it verified as its own and the
// publishes it made since, in order. Owner monitoring asks for the
// history from that version and compares (docs/key-transparency.md §4).
// Persist the state with the account's other state: OnChange is called
// with every change, before a publish is sent and after each answer.
type KTOwner struct {
	Label string

	mu       sync.Mutex
	state    kt.OwnerState
	checked  uint64 // the epoch of the last monitoring run that raised no alarm
	onChange func(kt.OwnerState) error
}

// NewKTOwner starts an owner record for label, with nothing published.
func NewKTOwner(label string) *KTOwner {
	return &KTOwner{Label: label}
}

// State returns a copy of the owner's state.
func (o *KTOwner) State() kt.OwnerState {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state.Clone()
}

// SetState restores the state from storage.
func (o *KTOwner) SetState(st kt.OwnerState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.state = st.Clone()
}

// OnChange sets the function that persists the state; an error from it
// stops a publish before it is sent.
func (o *KTOwner) OnChange(f func(kt.OwnerState) error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.onChange = f
}

// Checked is the epoch of the last monitoring run that raised no alarm
// (0: none). Monitoring goes by version (State); this is for display.
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

// update changes the state with f and persists it.
func (o *KTOwner) update(f func(st *kt.OwnerState)) error {
	o.mu.Lock()
	f(&o.state)
	st, save := o.state.Clone(), o.onChange
	o.mu.Unlock()
	if save == nil {
		return nil
	}
	return save(st)
}

// KTVersionError reports a publish the server answered with a version
// other than the next one after the owner's: the log holds versions of
// the owner's label the owner did not make (or the server lies about
// this one). Raise it as an alarm; the next monitoring run shows which.
type KTVersionError struct {
	Alarm kt.Alarm
}

func (e *KTVersionError) Error() string { return "kt publish: " + e.Alarm.String() }

// KTPublish publishes a signed binding under the session's own username
// (b.Label) and records it in owner: as pending before it is sent, then
// with the version the server answered, which must be the next one
// (*KTVersionError otherwise). It is not retried: a lost reply may still
// have published, and the publish stays pending for monitoring to settle.
func (c *Conn) KTPublish(ctx context.Context, s *Session, owner *KTOwner, b *kt.Binding) (version uint32, epoch uint64, err error) {
	if owner == nil || owner.Label != b.Label {
		return 0, 0, fmt.Errorf("kt publish: owner record is not for %q", b.Label)
	}
	value := b.Marshal()
	if err := owner.update(func(st *kt.OwnerState) { st.Publishing(value) }); err != nil {
		return 0, 0, fmt.Errorf("kt publish: saving the owner state: %w", err)
	}
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
		if _, refused := wire.CodeOf(err); refused {
			// The server refused it: nothing was published. (A lost
			// answer leaves the publish pending.)
			if serr := owner.update(func(st *kt.OwnerState) { dropPending(st, value) }); serr != nil {
				return 0, 0, fmt.Errorf("kt publish: %w (and saving the owner state: %v)", err, serr)
			}
		}
		return 0, 0, fmt.Errorf("kt publish: %w", err)
	}
	var alarm *kt.Alarm
	if err := owner.update(func(st *kt.OwnerState) { alarm = st.Published(value, version) }); err != nil {
		return 0, 0, fmt.Errorf("kt publish: saving the owner state: %w", err)
	}
	if alarm != nil {
		return 0, 0, &KTVersionError{Alarm: *alarm}
	}
	return version, epoch, nil
}

// dropPending forgets the last pending publish of value that has no version.
func dropPending(st *kt.OwnerState, value []byte) {
	h := sha256.Sum256(value)
	for i := len(st.Pending) - 1; i >= 0; i-- {
		if st.Pending[i].Version == 0 && st.Pending[i].Hash == h {
			st.Pending = append(st.Pending[:i:i], st.Pending[i+1:]...)
			return
		}
	}
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
	res, err := c.KTLookupValue(ctx, v, label)
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

// KTLookupValue fetches and verifies label's lookup proof, as KTLookup
// does, but leaves the value unparsed: for labels whose values are not
// bindings (kt.TokenKeyLabel), and for callers that parse it themselves.
func (c *Conn) KTLookupValue(ctx context.Context, v *kt.Verifier, label string) (*kt.LookupResult, error) {
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
	res, err := c.KTLookupValue(ctx, v, kt.TokenKeyLabel(key.Epoch))
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

// KTTokenEpoch checks a token epoch length the server announced against
// the one it committed in the key-transparency log (kt.TokenEpochLabel,
// version 1, never changed) and returns nil when they are the same. A
// different length, a second version or a malformed value is
// ErrEpochLength: the server would number this client's epochs apart
// from everyone else's. A length not committed yet is a plain error.
func (c *Conn) KTTokenEpoch(ctx context.Context, v *kt.Verifier, length time.Duration) error {
	res, err := c.KTLookupValue(ctx, v, kt.TokenEpochLabel)
	if err != nil {
		return err
	}
	if res.Version == 0 {
		return fmt.Errorf("kt token epoch: the token epoch length is not committed yet")
	}
	committed, perr := kt.ParseTokenEpochValue(res.Value)
	switch {
	case res.Version != 1:
		return fmt.Errorf("%w: the committed length has %d versions (it may never change)", ErrEpochLength, res.Version)
	case perr != nil:
		return fmt.Errorf("%w: the committed length is malformed: %v", ErrEpochLength, perr)
	case committed != length:
		return fmt.Errorf("%w: %v announced, %v committed in key transparency", ErrEpochLength, length, committed)
	}
	return nil
}

// KTHistory returns the versions of the session's own label from version
// since (1 when since is 0) at the newest epoch, verified (one page of at
// most kt.MaxHistoryServed versions: History.More says whether more
// follow), and the encoded proof (evidence for alarms).
func (c *Conn) KTHistory(ctx context.Context, v *kt.Verifier, s *Session, label string, since uint32) (*kt.History, []byte, error) {
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

// KTMonitor checks the owner's label: it fetches the verified history from
// the last version the owner verified (page by page) up to the greatest
// version at the newest epoch, and compares it with the owner's state
// (kt.OwnerState.Check). It returns an alarm, with the signed checkpoint
// and proof as evidence, for every version the owner did not publish (a
// key the server showed others in its name), out of order, with another
// value, or missing. No alarms and a nil error mean the log agrees with
// the owner, whose state then advances (and is persisted).
func (c *Conn) KTMonitor(ctx context.Context, v *kt.Verifier, s *Session, owner *KTOwner) ([]kt.Alarm, error) {
	st := owner.State()
	for {
		h, raw, err := c.KTHistory(ctx, v, s, owner.Label, st.Version)
		if err != nil {
			return nil, err
		}
		next, alarms := st.Check(h, raw)
		if len(alarms) > 0 {
			return alarms, nil
		}
		if h.More && next.Version <= st.Version {
			return nil, fmt.Errorf("kt history: %w: a page from version %d makes no progress", kt.ErrInvalid, st.Version)
		}
		start := st
		st = next
		if err := owner.update(func(cur *kt.OwnerState) { *cur = advanced(*cur, start, next) }); err != nil {
			return nil, fmt.Errorf("kt monitor: saving the owner state: %w", err)
		}
		if !h.More {
			owner.SetChecked(h.Record.Epoch)
			return nil, nil
		}
	}
}

// advanced is cur after a clean check that started from start and
// produced next: the check consumed a prefix of start's pending
// publishes; cur may have gained publishes (appended) or answers
// (versions) while it ran, which are kept. If cur moved on otherwise
// (another run advanced it), it is left alone.
func advanced(cur, start, next kt.OwnerState) kt.OwnerState {
	n0, kept := len(start.Pending), len(next.Pending)
	if cur.Version != start.Version || len(cur.Pending) < n0 || kept > n0 {
		return cur
	}
	out := next.Clone()
	out.Pending = append([]kt.PendingPublish(nil), cur.Pending[n0-kept:]...)
	return out
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

// CurrentTokenKey fetches the server's token keys and checks the epoch
// length and the current epoch's key against the ones committed in key
// transparency.
func (c *Conn) CurrentTokenKey(ctx context.Context, v *kt.Verifier) (*TokenKeys, error) {
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("token keys: %w", err)
	}
	if err := c.KTTokenEpoch(ctx, v, keys.Epoch); err != nil {
		return nil, err
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
			if a, err := wire.ParseAddress(addr); opts.Tor != nil || (err == nil && a.AnyOnion()) {
				cancel()
				actx, cancel = context.WithTimeout(ctx, 2*time.Minute)
			}
			defer cancel()
			c, err := Dial(actx, addr, opts)
			if err != nil {
				return err
			}
			defer c.Close()
			v, err := pin.Verifier()
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

// KTLookupBatch returns the verified lookups of 1 to kt.MaxBatchLabels
// labels, in the order asked, under one epoch proof (the values are not
// parsed). The server learns that one client wants them all: put in one
// batch only labels that may be tied together (docs/key-transparency.md
// §5; the messenger plans its batches with planLookups).
func (c *Conn) KTLookupBatch(ctx context.Context, v *kt.Verifier, labels []string) ([]*kt.LookupResult, error) {
	raw, err := c.ktProof(ctx, &wire.KTLookupBatch{Labels: labels, KnownSize: v.KnownSize()})
	if err != nil {
		return nil, fmt.Errorf("kt lookup batch: %w", err)
	}
	p, err := kt.ParseBatchLookupProof(raw)
	if err != nil {
		return nil, fmt.Errorf("kt lookup batch: %w", err)
	}
	res, err := v.VerifyLookupBatch(labels, p)
	if err != nil {
		return nil, fmt.Errorf("kt lookup batch: %w", err)
	}
	return res, nil
}
