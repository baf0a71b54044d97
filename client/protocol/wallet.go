package protocol

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/tokens"
)

// Errors of the wallet.
var (
	ErrWalletCorrupt = errors.New("client: wallet is corrupt")
	// ErrKeyChanged: the server showed a token key for an epoch other
	// than the one this wallet remembers for it.
	ErrKeyChanged = errors.New("client: server changed its token key for an epoch")
	// ErrTokenEpoch: the epoch the server calls current is not the one
	// the client's clock gives (within TokenEpochSkew).
	ErrTokenEpoch = errors.New("client: the server's token epoch does not match this device's clock")
	// ErrEpochLength: the server announced another token epoch length
	// than the one this wallet remembers, or than the one it committed in
	// key transparency (kt.TokenEpochLabel).
	ErrEpochLength = errors.New("client: the server's token epoch length is not the one remembered or committed")
	// ErrNoTokens: the wallet is empty. It refills on its own schedule
	// (Wallet.RunRefills), never because of a spend.
	ErrNoTokens = errors.New("no delivery tokens in the wallet")
	// ErrNoKTVerifier: a wallet refills only with a key-transparency
	// verifier to check the token key against.
	ErrNoKTVerifier = errors.New("client: the wallet has no key-transparency verifier to check token keys")
)

// Wallet defaults (docs/user-guide.md "Delivery tokens"). A scheduled
// refill check comes after an exponential gap of mean DefaultRefillMean
// and tops the wallet up when it holds fewer than DefaultWalletLow
// tokens. Spending at rate r, the wallet runs dry before the next check
// with probability exp(-Low / (r × mean)): at the default quota of 1,000
// tokens a day spent as fast as it allows (0.69 a minute), about 5e-7.
const (
	DefaultWalletLow  = 50
	DefaultRefillMean = 5 * time.Minute
)

// TokenEpochSkew is how far the device's clock may be from the server's:
// the epoch the server calls current must contain some instant within
// TokenEpochSkew of the device's clock (so near a boundary either
// neighbour is accepted, elsewhere only one epoch).
const TokenEpochSkew = 5 * time.Minute

// maxRememberedKeys bounds the token keys a wallet remembers (the newest
// epochs): two months of one-day epochs.
const maxRememberedKeys = 64

// WalletOptions tune a Wallet. Zero values take defaults.
type WalletOptions struct {
	Low   int // low-water mark: a scheduled refill tops up below it; default DefaultWalletLow
	Batch int // tokens per issuance request, ≤ tokens.MaxBatch; default tokens.MaxBatch
	// KT checks every token key against the one the server committed in
	// key transparency for its epoch (docs/key-transparency.md §2) before
	// any token is obtained under it. A wallet without it cannot refill.
	KT *kt.Verifier
	// Now is the clock the server's epoch is checked against; default
	// time.Now.
	Now func() time.Time
	// RefillMean is the mean gap between the scheduled refill checks of
	// RunRefills; default DefaultRefillMean.
	RefillMean time.Duration
	// OnAlarm hears of every token key or epoch that shows the server
	// lying (the refill that found it also fails). It is called without
	// the wallet's lock held.
	OnAlarm func(TokenKeyAlarm)
	// Account, when set, runs each refill's exchanges (TopUp, Refill,
	// Key) on a connection of its choosing, dialled for the exchange and
	// closed after it, instead of the wallet's Conn: a client that keeps
	// no account connection open (docs/user-guide.md "Delivery tokens").
	Account func(ctx context.Context, exchange func(*Conn) error) error
}

// TokenKeyAlarm is evidence that the server tried to single this user
// out through its token keys: a key not committed in key transparency, a
// key changed for an epoch, an epoch the clock contradicts, or a changed
// epoch length. Err says which (errors.Is with ErrTokenKeyMismatch,
// ErrKeyChanged, ErrTokenEpoch, ErrEpochLength).
type TokenKeyAlarm struct {
	Epoch uint32
	Shown []byte // the key the server showed (tokens.PublicKey encoding), if any
	Known []byte // the key remembered or committed for that epoch, if known
	Err   error
}

func (a TokenKeyAlarm) String() string { return a.Err.Error() }

// Wallet holds unspent delivery tokens, with the token keys it checked,
// in a WalletStore: the messenger keeps them in its encrypted local state
// (NewWallet), a bare protocol connection may keep them in a file of
// their own (OpenWallet, mode 0600). Spending a token is persisted before
// the token is handed out, so a crash can lose a token but never spend
// one twice.
//
// Spending never refills: refills run on a schedule of their own
// (RunRefills) or when the caller asks (Refill, TopUp), so the account
// connection's IssueTokens requests are not timed by the anonymous
// connections' sends. The wallet's Conn (or WalletOptions.Account) should
// be the account connection, not one used for anonymous sends.
type Wallet struct {
	store WalletStore
	conn  *Conn
	sess  *Session
	opts  WalletOptions
	gap   func() time.Duration // the refill schedule's gaps; tests replace it

	mu       sync.Mutex
	toks     []tokens.Token
	epochLen time.Duration     // the server's token epoch length, once seen
	keys     map[uint32][]byte // the token keys checked, by epoch
	fillErr  error             // the last scheduled refill's error
	refills  []time.Time       // when scheduled refills started
	// gen counts the encodings made (save, TakeEncoded): an encoding is
	// current while gen still holds its number.
	gen atomic.Uint64
}

// Wallet encoding (inside the encrypted state, or the wallet file):
//
//	version u8 = 2
//	count u32, count × tokens.TokenSize
//	epoch_seconds u32          // 0: not seen yet
//	nkeys u8, nkeys × { epoch u32, key[tokens.PublicKeySize] }  // ascending epochs
//
// Version 1 is the first two lines only (no keys remembered): its tokens
// were obtained under keys never checked against key transparency, so
// they are not spent (a token is spent only under a remembered key).
const (
	walletVersion1 = 1
	walletVersion  = 2
)

// WalletStore keeps a wallet's serialized tokens. Load returns nil for an
// empty wallet; Save replaces the contents durably and atomically.
type WalletStore interface {
	Load() ([]byte, error)
	Save([]byte) error
}

// OpenWallet loads the wallet file at path (a missing file is an empty
// wallet) and returns a wallet that refills through conn with sess.
func OpenWallet(path string, conn *Conn, sess *Session, opts WalletOptions) (*Wallet, error) {
	return NewWallet(fileWallet(path), conn, sess, opts)
}

// NewWallet is OpenWallet over any store, for example the client's
// encrypted local state.
func NewWallet(store WalletStore, conn *Conn, sess *Session, opts WalletOptions) (*Wallet, error) {
	if opts.Low <= 0 {
		opts.Low = DefaultWalletLow
	}
	if opts.Batch <= 0 || opts.Batch > tokens.MaxBatch {
		opts.Batch = tokens.MaxBatch
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RefillMean <= 0 {
		opts.RefillMean = DefaultRefillMean
	}
	w := &Wallet{store: store, conn: conn, sess: sess, opts: opts, keys: map[uint32][]byte{}}
	mean := opts.RefillMean
	w.gap = func() time.Duration { return ExpGap(mean) }
	raw, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("open wallet: %w", err)
	}
	if raw == nil {
		return w, nil
	}
	if err := w.decode(raw); err != nil {
		return nil, fmt.Errorf("open wallet: %w", err)
	}
	return w, nil
}

// decode reads a version 1 or 2 wallet encoding into w.
func (w *Wallet) decode(raw []byte) error {
	if len(raw) < 5 || (raw[0] != walletVersion1 && raw[0] != walletVersion) {
		return ErrWalletCorrupt
	}
	version := raw[0]
	n := binary.BigEndian.Uint32(raw[1:])
	body := raw[5:]
	if uint64(len(body)) < uint64(n)*tokens.TokenSize {
		return fmt.Errorf("%w: %d tokens announced, %d bytes", ErrWalletCorrupt, n, len(body))
	}
	for i := range int(n) {
		t, err := tokens.ParseToken(body[i*tokens.TokenSize : (i+1)*tokens.TokenSize])
		if err != nil {
			return fmt.Errorf("%w: %v", ErrWalletCorrupt, err)
		}
		w.toks = append(w.toks, *t)
	}
	rest := body[int(n)*tokens.TokenSize:]
	if version == walletVersion1 {
		if len(rest) != 0 {
			return fmt.Errorf("%w: %d bytes after the tokens", ErrWalletCorrupt, len(rest))
		}
		return nil
	}
	const entry = 4 + tokens.PublicKeySize
	if len(rest) < 5 || len(rest) != 5+int(rest[4])*entry {
		return fmt.Errorf("%w: token keys", ErrWalletCorrupt)
	}
	w.epochLen = time.Duration(binary.BigEndian.Uint32(rest)) * time.Second
	rest = rest[5:]
	for prev := int64(-1); len(rest) > 0; {
		epoch := binary.BigEndian.Uint32(rest)
		key := rest[4:entry]
		pk, err := tokens.ParsePublicKey(key)
		if err != nil || pk.Epoch != epoch || int64(epoch) <= prev { // ascending, no repeats
			return fmt.Errorf("%w: token key of epoch %d", ErrWalletCorrupt, epoch)
		}
		prev = int64(epoch)
		w.keys[epoch] = slices.Clone(key)
		rest = rest[entry:]
	}
	return nil
}

// Len is the number of unspent tokens held.
func (w *Wallet) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.toks)
}

// Low is the wallet's low-water mark (WalletOptions.Low, defaulted): a
// scheduled refill tops the wallet up when it holds fewer tokens.
func (w *Wallet) Low() int { return w.opts.Low }

// Take returns one token's bytes for a Send or CreateMailbox Auth field.
// Tokens too old to be accepted, or of an epoch whose key the wallet did
// not check against key transparency, are dropped. An
// empty wallet is ErrNoTokens: Take never refills.
func (w *Wallet) Take(ctx context.Context) ([]byte, error) {
	toks, err := w.TakeN(ctx, 1)
	if len(toks) == 0 {
		return nil, err
	}
	return toks[0], nil
}

// TakeN returns up to n tokens at once and persists the wallet once: for
// an outbox sending many envelopes. Fewer than n come back, with an
// error wrapping ErrNoTokens, when the wallet holds fewer; it never
// refills.
func (w *Wallet) TakeN(_ context.Context, n int) ([][]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	usable := w.usable()
	got := min(n, len(usable))
	var short error
	switch {
	case got < n && w.fillErr != nil:
		short = fmt.Errorf("wallet: %w (%d wanted, %d held); the last scheduled refill failed: %w", ErrNoTokens, n, got, w.fillErr)
	case got < n:
		short = fmt.Errorf("wallet: %w (%d wanted, %d held); it refills on its own schedule", ErrNoTokens, n, got)
	}
	if got == 0 && len(usable) == len(w.toks) {
		return nil, short
	}
	rest := usable[got:]
	if err := w.save(rest); err != nil {
		return nil, err
	}
	out := make([][]byte, got)
	for i := range out {
		raw, err := usable[i].MarshalBinary()
		if err != nil {
			return nil, err
		}
		out[i] = raw
	}
	w.toks = rest
	return out, short
}

// OldestEpoch is the oldest token epoch the server still accepts by the
// clock (0 while the epoch length is unknown): for tokens kept outside
// the wallet (the outbox's spare pool).
func (w *Wallet) OldestEpoch() uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.epochLen > 0 {
		if cur := tokens.EpochAt(w.opts.Now().Add(-TokenEpochSkew), w.epochLen); cur > 0 {
			return cur - 1
		}
	}
	return 0
}

// usable returns the tokens the server can still accept by the clock and
// whose epoch's key the wallet checked and remembers. Call with mu held.
func (w *Wallet) usable() []tokens.Token {
	oldest := uint32(0)
	if w.epochLen > 0 {
		if cur := tokens.EpochAt(w.opts.Now().Add(-TokenEpochSkew), w.epochLen); cur > 0 {
			oldest = cur - 1 // the server takes the current and previous epoch
		}
	}
	out := make([]tokens.Token, 0, len(w.toks))
	for _, t := range w.toks {
		if t.Epoch >= oldest && w.keys[t.Epoch] != nil {
			out = append(out, t)
		}
	}
	return out
}

// Refill fetches the token keys, checks the current one (Key below), and
// obtains one batch of tokens under it; tokens whose epoch is no longer
// accepted are dropped.
func (w *Wallet) Refill(ctx context.Context) error {
	if !w.CanRefill() {
		return fmt.Errorf("wallet refill: no account session")
	}
	return w.exchange(ctx, func(conn *Conn) error { return w.refillOn(ctx, conn) })
}

// CanRefill reports whether the wallet has an account session and a way
// to reach the account (a Conn or WalletOptions.Account).
func (w *Wallet) CanRefill() bool {
	return w.sess != nil && (w.conn != nil || w.opts.Account != nil)
}

// exchange runs fn on the account connection: one that
// WalletOptions.Account dials for it, else the wallet's Conn.
func (w *Wallet) exchange(ctx context.Context, fn func(*Conn) error) error {
	if w.opts.Account != nil {
		return w.opts.Account(ctx, fn)
	}
	if w.conn == nil {
		return fmt.Errorf("wallet: no account connection")
	}
	return fn(w.conn)
}

// refillOn is Refill on conn.
func (w *Wallet) refillOn(ctx context.Context, conn *Conn) error {
	key, err := w.KeyOn(ctx, conn)
	if err != nil {
		return fmt.Errorf("wallet refill: %w", err)
	}
	fresh, err := conn.IssueTokens(ctx, w.sess, key, w.opts.Batch)
	if err != nil {
		return fmt.Errorf("wallet refill: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := w.toks[:0:0]
	for _, t := range w.toks {
		if t.Epoch+1 >= key.Epoch && w.keys[t.Epoch] != nil { // current or previous epoch
			kept = append(kept, t)
		}
	}
	kept = append(kept, fresh...)
	if err := w.save(kept); err != nil {
		return err
	}
	w.toks = kept
	return nil
}

// Key fetches the server's token keys and returns the current epoch's
// once it passed every check, in this order:
//
//   - the epoch length is the one remembered, else ErrEpochLength;
//   - the current epoch is the one the clock gives within
//     TokenEpochSkew, else ErrTokenEpoch;
//   - a key remembered for the epoch is the same key, else
//     ErrKeyChanged;
//   - before a key not remembered is taken, the epoch length is the one
//     committed in key transparency under kt.TokenEpochLabel (version 1
//     only), else ErrEpochLength: a length trusted on first use would let
//     a server give a new user epochs of its own from its first contact;
//   - a key not remembered is the one committed in key transparency
//     under kt.TokenKeyLabel(epoch), else ErrTokenKeyMismatch; it is then
//     remembered, with the length, in the wallet's store, before any
//     token is obtained.
//
// Every failure but a transient one (a network error, an epoch not
// committed yet) is reported to WalletOptions.OnAlarm.
func (w *Wallet) Key(ctx context.Context) (*tokens.PublicKey, error) {
	var key *tokens.PublicKey
	err := w.exchange(ctx, func(conn *Conn) error {
		var err error
		key, err = w.KeyOn(ctx, conn)
		return err
	})
	return key, err
}

// KeyOn is Key on conn, a connection the caller chose (and closes).
func (w *Wallet) KeyOn(ctx context.Context, conn *Conn) (*tokens.PublicKey, error) {
	keys, err := conn.TokenKeys(ctx)
	if err != nil {
		return nil, err
	}
	key := keys.Keys[keys.Current]
	raw, err := key.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if keys.Epoch < time.Second || keys.Epoch%time.Second != 0 {
		return nil, fmt.Errorf("token keys: epoch length %v", keys.Epoch)
	}
	w.mu.Lock()
	known, remembered := w.keys[keys.Current]
	epochLen := w.epochLen
	w.mu.Unlock()
	switch {
	case epochLen != 0 && keys.Epoch != epochLen:
		return nil, w.alarm(TokenKeyAlarm{Epoch: keys.Current, Shown: raw,
			Err: fmt.Errorf("%w: %v announced, %v remembered", ErrEpochLength, keys.Epoch, epochLen)})
	case !epochPlausible(keys.Current, w.opts.Now(), keys.Epoch):
		return nil, w.alarm(TokenKeyAlarm{Epoch: keys.Current, Shown: raw,
			Err: fmt.Errorf("%w: the server names epoch %d, the clock gives %d (epochs of %v)",
				ErrTokenEpoch, keys.Current, tokens.EpochAt(w.opts.Now(), keys.Epoch), keys.Epoch)})
	case remembered && subtle.ConstantTimeCompare(known, raw) != 1:
		return nil, w.alarm(TokenKeyAlarm{Epoch: keys.Current, Shown: raw, Known: known,
			Err: fmt.Errorf("%w (epoch %d)", ErrKeyChanged, keys.Current)})
	case remembered:
		return key, nil // checked against key transparency when remembered
	}
	if w.opts.KT == nil {
		return nil, ErrNoKTVerifier
	}
	if err := conn.KTTokenEpoch(ctx, w.opts.KT, keys.Epoch); err != nil {
		if errors.Is(err, ErrEpochLength) {
			return nil, w.alarm(TokenKeyAlarm{Epoch: keys.Current, Shown: raw, Err: err})
		}
		return nil, err
	}
	if err := conn.KTTokenKey(ctx, w.opts.KT, key); err != nil {
		if errors.Is(err, ErrTokenKeyMismatch) {
			return nil, w.alarm(TokenKeyAlarm{Epoch: keys.Current, Shown: raw, Err: err})
		}
		return nil, err
	}
	if err := w.remember(keys.Current, raw, keys.Epoch); err != nil {
		return nil, err
	}
	return key, nil
}

// epochPlausible: epoch contains an instant within TokenEpochSkew of now.
func epochPlausible(epoch uint32, now time.Time, length time.Duration) bool {
	lo := tokens.EpochAt(now.Add(-TokenEpochSkew), length)
	hi := tokens.EpochAt(now.Add(TokenEpochSkew), length)
	return epoch >= lo && epoch <= hi
}

// alarm reports a to OnAlarm and returns its error.
func (w *Wallet) alarm(a TokenKeyAlarm) error {
	if w.opts.OnAlarm != nil {
		w.opts.OnAlarm(a)
	}
	return a.Err
}

// remember stores a token key checked against key transparency (and the
// epoch length, when given) durably. A different key already remembered
// for the epoch is ErrKeyChanged.
func (w *Wallet) remember(epoch uint32, raw []byte, epochLen time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if k, ok := w.keys[epoch]; ok {
		if subtle.ConstantTimeCompare(k, raw) != 1 {
			return fmt.Errorf("%w (epoch %d)", ErrKeyChanged, epoch)
		}
		if epochLen == 0 || w.epochLen == epochLen {
			return nil
		}
	}
	prevKeys, prevLen := w.keys, w.epochLen
	w.keys = make(map[uint32][]byte, len(prevKeys)+1)
	for e, k := range prevKeys {
		w.keys[e] = k
	}
	w.keys[epoch] = slices.Clone(raw)
	if epochLen != 0 {
		w.epochLen = epochLen
	}
	w.pruneKeys()
	if err := w.save(w.toks); err != nil {
		w.keys, w.epochLen = prevKeys, prevLen
		return err
	}
	return nil
}

// pruneKeys keeps the newest maxRememberedKeys epochs. Call with mu held.
func (w *Wallet) pruneKeys() {
	if len(w.keys) <= maxRememberedKeys {
		return
	}
	epochs := make([]uint32, 0, len(w.keys))
	for e := range w.keys {
		epochs = append(epochs, e)
	}
	slices.Sort(epochs)
	for _, e := range epochs[:len(epochs)-maxRememberedKeys] {
		delete(w.keys, e)
	}
}

// TopUp refills until the wallet holds at least n usable tokens, a few
// batches at most, all on one account connection.
func (w *Wallet) TopUp(ctx context.Context, n int) error {
	have := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.usable())
	}
	if have() >= n {
		return nil
	}
	if !w.CanRefill() {
		return fmt.Errorf("wallet refill: no account session")
	}
	return w.exchange(ctx, func(conn *Conn) error {
		for range n/w.opts.Batch + 2 {
			if have() >= n {
				return nil
			}
			if err := w.refillOn(ctx, conn); err != nil {
				return err
			}
		}
		return nil
	})
}

// RunRefills is the wallet's refill schedule, until ctx ends: checks at
// exponential gaps (mean WalletOptions.RefillMean) placed on an absolute
// timeline drawn independently of any spend, each topping the wallet up
// to its low-water mark when it holds fewer. The account connection's
// IssueTokens requests therefore start only at these instants, whatever
// the anonymous connections send. Errors are kept for RefillErr.
func (w *Wallet) RunRefills(ctx context.Context) {
	RunSchedule(ctx, w.gap, func(at time.Time) {
		w.ScheduledRefill(ctx, at)
	})
}

// ScheduledRefill is one check of the refill schedule (RunRefills), for
// a caller that runs the schedule itself (RunSchedule): at is the
// instant the check was due.
func (w *Wallet) ScheduledRefill(ctx context.Context, at time.Time) {
	w.mu.Lock()
	low := len(w.usable()) < w.opts.Low
	if low {
		w.refills = append(w.refills, at)
	}
	w.mu.Unlock()
	if !low {
		return
	}
	err := w.TopUp(ctx, w.opts.Low)
	w.mu.Lock()
	w.fillErr = err
	w.mu.Unlock()
}

// RunSchedule calls tick at instants separated by gap(), measured from
// the schedule's start (a slow tick delays the next one but does not
// shift the timeline), until ctx ends.
func RunSchedule(ctx context.Context, gap func() time.Duration, tick func(at time.Time)) {
	next := time.Now()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next = next.Add(gap())
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tick(next)
	}
}

// ExpGap draws an exponential gap of the given mean.
func ExpGap(mean time.Duration) time.Duration {
	return time.Duration(-math.Log1p(-mrand.Float64()) * float64(mean))
}

// save serializes toks and the remembered keys into the store. Call with
// mu held.
func (w *Wallet) save(toks []tokens.Token) error {
	buf, err := w.encode(toks)
	if err != nil {
		return err
	}
	if err := w.store.Save(buf); err != nil {
		return fmt.Errorf("save wallet: %w", err)
	}
	return nil
}

// TakeEncoded is TakeN for a caller that stores the wallet itself, in the
// same transaction that records what the tokens are for (the client's
// outbox), so that one fsync makes both durable before any token is
// shown to the server. It takes up to n tokens (fewer, with no error,
// when the wallet holds fewer) and returns them with the wallet's
// encoding after the take and that encoding's generation. The caller
// writes enc where WalletStore.Save would, in the same transaction; if
// Current(gen) no longer holds after it committed, a later encoding (a
// refill's) may have been stored before it, and the caller calls Resave
// so that the store holds the wallet as it is in memory. The taken
// tokens must not be used before enc is stored.
func (w *Wallet) TakeEncoded(n int) (toks [][]byte, enc []byte, gen uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	usable := w.usable()
	got := min(n, len(usable))
	if got == 0 {
		return nil, nil, 0, nil
	}
	rest := usable[got:]
	if enc, err = w.encode(rest); err != nil {
		return nil, nil, 0, err
	}
	toks = make([][]byte, got)
	for i := range toks {
		if toks[i], err = usable[i].MarshalBinary(); err != nil {
			return nil, nil, 0, err
		}
	}
	w.toks = rest
	return toks, enc, w.gen.Load(), nil
}

// Current reports whether the encoding of generation gen is the newest
// the wallet made (TakeEncoded).
func (w *Wallet) Current(gen uint64) bool { return w.gen.Load() == gen }

// Resave stores the wallet as it is in memory (see TakeEncoded).
func (w *Wallet) Resave() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.save(w.toks)
}

// encode serializes toks and the remembered keys, as a new generation.
// Call with mu held.
func (w *Wallet) encode(toks []tokens.Token) ([]byte, error) {
	w.gen.Add(1)
	buf := make([]byte, 5, 5+len(toks)*tokens.TokenSize+5+len(w.keys)*(4+tokens.PublicKeySize))
	buf[0] = walletVersion
	binary.BigEndian.PutUint32(buf[1:], uint32(len(toks)))
	for i := range toks {
		raw, err := toks[i].MarshalBinary()
		if err != nil {
			return nil, err
		}
		buf = append(buf, raw...)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(w.epochLen/time.Second))
	epochs := make([]uint32, 0, len(w.keys))
	for e := range w.keys {
		epochs = append(epochs, e)
	}
	slices.Sort(epochs)
	buf = append(buf, uint8(len(epochs)))
	for _, e := range epochs {
		buf = binary.BigEndian.AppendUint32(buf, e)
		buf = append(buf, w.keys[e]...)
	}
	return buf, nil
}

// fileWallet is a wallet file, written atomically (temp file, fsync,
// rename) with mode 0600.
type fileWallet string

func (path fileWallet) Load() ([]byte, error) {
	raw, err := os.ReadFile(string(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return raw, err
}

func (path fileWallet) Save(buf []byte) error {
	dir := filepath.Dir(string(path))
	f, err := os.CreateTemp(dir, ".wallet-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(buf)
	if err := errors.Join(werr, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, string(path)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// RefillErr is the error of the last scheduled refill, if it failed.
func (w *Wallet) RefillErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fillErr
}

// ScheduledRefills returns the instants at which scheduled refills
// started (RunRefills), oldest first.
func (w *Wallet) ScheduledRefills() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.refills)
}

// KnownKeys returns the token keys this wallet checked against key
// transparency and remembers, by epoch (tokens.PublicKey encodings).
func (w *Wallet) KnownKeys() map[uint32][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[uint32][]byte, len(w.keys))
	for e, k := range w.keys {
		out[e] = slices.Clone(k)
	}
	return out
}

// EpochLength is the server's token epoch length as first seen (0: not
// seen yet); a different one announced later is refused.
func (w *Wallet) EpochLength() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epochLen
}

// Commitments are the token-key commitments a binding publishes: the
// newest n remembered epochs, newest first.
func (w *Wallet) Commitments(n int) []kt.TokenKeyCommitment {
	known := w.KnownKeys()
	epochs := make([]uint32, 0, len(known))
	for e := range known {
		epochs = append(epochs, e)
	}
	slices.Sort(epochs)
	slices.Reverse(epochs)
	var out []kt.TokenKeyCommitment
	for _, e := range epochs[:min(n, len(epochs))] {
		out = append(out, kt.TokenKeyCommitment{Epoch: e, Hash: sha256.Sum256(known[e])})
	}
	return out
}
