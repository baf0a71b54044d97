package tokens

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"
	"golang.org/x/crypto/cryptobyte"
)

// MasterSecretSize is the size of the issuer's master secret.
const MasterSecretSize = 32

// DefaultEpochLength is one day: the daily token quota of an account and
// the key rotation period coincide.
const DefaultEpochLength = 24 * time.Hour

// keyInfo prefixes the RFC 9497 DeriveKeyPair info of every epoch key.
const keyInfo = "qpc/1 token key"

// spendLabel separates SpendKey from every other hash of a token.
const spendLabel = "qpc/1 token spend"

// Issuer mints and redeems tokens. Its key for epoch e is
//
//	DeriveKeyPair(master, "qpc/1 token key" || uint32(e))   (RFC 9497 §3.2.1)
//
// in verifiable mode. Deriving rather than generating and persisting each
// epoch's key means every server frontend computes the same key from one
// secret without a shared key store, the public keys of future epochs can
// be committed to key transparency before they are used, and there is
// nothing to migrate at rotation. The cost: whoever learns the master secret
// can compute every epoch's key, past and future, so it must be kept like a
// signing key and rotated (a new master is a new issuer) if exposed; keys of
// past epochs are worthless anyway, because Redeem accepts only the current
// and the previous epoch.
//
// An Issuer is safe for concurrent use.
type Issuer struct {
	master [MasterSecretSize]byte
	now    func() time.Time
	length time.Duration

	mu   sync.Mutex
	keys map[uint32]*oprf.PrivateKey
}

// Option configures an Issuer.
type Option func(*Issuer)

// WithEpochLength sets the epoch length (default DefaultEpochLength). Every
// frontend of one deployment must use the same length.
func WithEpochLength(d time.Duration) Option { return func(i *Issuer) { i.length = d } }

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(i *Issuer) { i.now = now } }

// NewIssuer returns an Issuer keyed by a 32-byte master secret (from
// crypto/rand, stored like the server's identity key).
func NewIssuer(master []byte, opts ...Option) (*Issuer, error) {
	if len(master) != MasterSecretSize {
		return nil, fmt.Errorf("tokens: master secret is %d bytes, want %d", len(master), MasterSecretSize)
	}
	i := &Issuer{now: time.Now, length: DefaultEpochLength, keys: make(map[uint32]*oprf.PrivateKey)}
	copy(i.master[:], master)
	for _, o := range opts {
		o(i)
	}
	if i.length < time.Second {
		return nil, fmt.Errorf("tokens: epoch length %v is under a second", i.length)
	}
	return i, nil
}

// EpochAt returns the epoch containing t for a given epoch length: the
// number of whole epochs since the Unix epoch.
func EpochAt(t time.Time, length time.Duration) uint32 {
	sec := t.Unix()
	if sec < 0 {
		return 0
	}
	return uint32(sec / int64(length/time.Second))
}

// Epoch returns the current epoch.
func (i *Issuer) Epoch() uint32 { return EpochAt(i.now(), i.length) }

// key returns the epoch's private key, caching the few in use.
func (i *Issuer) key(epoch uint32) (*oprf.PrivateKey, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if k, ok := i.keys[epoch]; ok {
		return k, nil
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte(keyInfo))
	b.AddUint32(epoch)
	k, err := oprf.DeriveKey(suite, oprf.VerifiableMode, i.master[:], b.BytesOrPanic())
	if err != nil {
		return nil, fmt.Errorf("tokens: derive key of epoch %d: %w", epoch, err)
	}
	k.Public() // oprf caches the public key lazily and unsynchronized: fill it under the lock
	if len(i.keys) >= 4 {
		clear(i.keys) // at most current, previous, next and one published ahead
	}
	i.keys[epoch] = k
	return k, nil
}

// PublicKey returns the public key of an epoch, for publication in key
// transparency and for clients to Blind against. Any epoch may be asked
// for, so keys can be published ahead of time.
func (i *Issuer) PublicKey(epoch uint32) (*PublicKey, error) {
	k, err := i.key(epoch)
	if err != nil {
		return nil, err
	}
	return newPublicKey(epoch, k.Public())
}

// Issue evaluates a batch of blinded elements under the current epoch's key
// and proves, with one batched DLEQ proof (RFC 9497 §2.2.1
// GenerateProof), that every evaluation used the published key. A request
// for any other epoch is ErrEpoch: the client should fetch the current key
// and blind again.
func (i *Issuer) Issue(req *TokenRequest) (*TokenResponse, error) {
	if len(req.Blinded) == 0 || len(req.Blinded) > MaxBatch {
		return nil, fmt.Errorf("%w: %d elements, want 1..%d", ErrBatch, len(req.Blinded), MaxBatch)
	}
	if cur := i.Epoch(); req.Epoch != cur {
		return nil, fmt.Errorf("%w: request for epoch %d, current is %d", ErrEpoch, req.Epoch, cur)
	}
	blinded, err := decodeElements(req.Blinded)
	if err != nil {
		return nil, err
	}
	k, err := i.key(req.Epoch)
	if err != nil {
		return nil, err
	}
	// RFC 9497 §3.3.2 BlindEvaluate (verifiable mode).
	ev, err := oprf.NewVerifiableServer(suite, k).Evaluate(&oprf.EvaluationRequest{Elements: blinded})
	if err != nil {
		return nil, fmt.Errorf("tokens: evaluate: %w", err)
	}
	return newResponse(req.Epoch, ev.Elements, ev.Proof)
}

func newResponse(epoch uint32, evaluated []oprf.Evaluated, proof *dleq.Proof) (*TokenResponse, error) {
	resp := &TokenResponse{Epoch: epoch, Evaluated: make([]Element, len(evaluated))}
	for j, e := range evaluated {
		var err error
		if resp.Evaluated[j], err = encodeElement(e); err != nil {
			return nil, err
		}
	}
	pb, err := proof.MarshalBinary()
	if err != nil || len(pb) != ProofSize {
		return nil, fmt.Errorf("tokens: proof encoding: %v", err)
	}
	copy(resp.Proof[:], pb)
	return resp, nil
}

// Redeem checks that t is a token of the current or the previous epoch by
// recomputing the PRF on its input (RFC 9497 §3.3.1 FullEvaluate) and
// comparing in constant time. It does not know whether t was spent before:
// the caller checks and records SpendKey(t) in the same transaction that
// accepts the request.
func (i *Issuer) Redeem(t *Token) error {
	cur := i.Epoch()
	if t.Epoch != cur && (cur == 0 || t.Epoch != cur-1) {
		return fmt.Errorf("%w: token of epoch %d, current is %d", ErrEpoch, t.Epoch, cur)
	}
	k, err := i.key(t.Epoch)
	if err != nil {
		return err
	}
	if !oprf.NewVerifiableServer(suite, k).VerifyFinalize(t.Input[:], t.Output[:]) {
		return ErrInvalid
	}
	return nil
}

// SpendKey is what the spent set records for a redeemed token:
// SHA-256("qpc/1 token spend" || epoch u32 || input). The input is random
// and was never shown to the issuer in the clear (issuance saw only
// r·H(input) for a uniformly random blind r), so the key cannot be linked to
// an issuance. Two different valid tokens never share a SpendKey: the output
// is a function of epoch and input.
func SpendKey(t *Token) [32]byte {
	h := sha256.New()
	h.Write([]byte(spendLabel))
	var e [4]byte
	binary.BigEndian.PutUint32(e[:], t.Epoch)
	h.Write(e[:])
	h.Write(t.Input[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}
