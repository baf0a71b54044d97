package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/quicprochat/qpc/tokens"
)

// Errors of the wallet.
var (
	ErrWalletCorrupt = errors.New("client: wallet file is corrupt")
	ErrKeyChanged    = errors.New("client: server changed its token key for an epoch")
)

// WalletOptions tune a Wallet. Zero values take defaults.
type WalletOptions struct {
	Low   int // refill when fewer tokens remain; default 20
	Batch int // tokens per issuance request, ≤ tokens.MaxBatch; default 100
}

// Wallet holds unspent delivery tokens in a file (mode 0600) and refills
// itself from the account's quota when it runs low. Spending a token is
// persisted before the token is handed out, so a crash can lose a token
// but never spend one twice.
//
// The wallet's Conn should be the account connection, not the one used
// for anonymous sends.
type Wallet struct {
	store WalletStore
	conn  *Conn
	sess  *Session
	opts  WalletOptions

	mu      sync.Mutex
	toks    []tokens.Token
	seen    map[uint32][]byte // epoch key seen per epoch: a change is an attack
	filling bool
	fillErr error
}

// walletVersion is the first byte of a wallet file:
// version u8 | count u32 | count × tokens.TokenSize.
const walletVersion = 1

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
		opts.Low = 20
	}
	if opts.Batch <= 0 || opts.Batch > tokens.MaxBatch {
		opts.Batch = tokens.MaxBatch
	}
	w := &Wallet{store: store, conn: conn, sess: sess, opts: opts, seen: map[uint32][]byte{}}
	raw, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("open wallet: %w", err)
	}
	if raw == nil {
		return w, nil
	}
	if len(raw) < 5 || raw[0] != walletVersion {
		return nil, fmt.Errorf("open wallet: %w", ErrWalletCorrupt)
	}
	n := binary.BigEndian.Uint32(raw[1:])
	body := raw[5:]
	if uint64(len(body)) != uint64(n)*tokens.TokenSize {
		return nil, fmt.Errorf("open wallet: %w: %d tokens announced, %d bytes", ErrWalletCorrupt, n, len(body))
	}
	for i := range int(n) {
		t, err := tokens.ParseToken(body[i*tokens.TokenSize : (i+1)*tokens.TokenSize])
		if err != nil {
			return nil, fmt.Errorf("open wallet: %w: %v", ErrWalletCorrupt, err)
		}
		w.toks = append(w.toks, *t)
	}
	return w, nil
}

// Len is the number of unspent tokens held.
func (w *Wallet) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.toks)
}

// Take returns one token's bytes for a Send or CreateMailbox Auth field.
// Tokens too old to be accepted are dropped; an empty wallet refills
// first, a low one refills in the background.
func (w *Wallet) Take(ctx context.Context) ([]byte, error) {
	w.mu.Lock()
	if len(w.toks) == 0 {
		w.mu.Unlock()
		if err := w.Refill(ctx); err != nil {
			return nil, err
		}
		w.mu.Lock()
	}
	if len(w.toks) == 0 {
		w.mu.Unlock()
		return nil, fmt.Errorf("wallet: no token after refill")
	}
	tok := w.toks[0]
	rest := w.toks[1:]
	if err := w.save(rest); err != nil {
		w.mu.Unlock()
		return nil, err
	}
	w.toks = rest
	low := len(w.toks) < w.opts.Low && !w.filling
	if low {
		w.filling = true
	}
	w.mu.Unlock()
	if low {
		go func() {
			err := w.Refill(context.WithoutCancel(ctx))
			w.mu.Lock()
			w.filling, w.fillErr = false, err
			w.mu.Unlock()
		}()
	}
	return tok.MarshalBinary()
}

// Refill fetches the token keys, drops tokens whose epoch is no longer
// accepted, and obtains one batch of tokens for the current epoch.
func (w *Wallet) Refill(ctx context.Context) error {
	keys, err := w.conn.TokenKeys(ctx)
	if err != nil {
		return fmt.Errorf("wallet refill: %w", err)
	}
	key := keys.Keys[keys.Current]
	raw, err := key.MarshalBinary()
	if err != nil {
		return err
	}
	w.mu.Lock()
	if prev, ok := w.seen[keys.Current]; ok && !bytes.Equal(prev, raw) {
		w.mu.Unlock()
		return fmt.Errorf("wallet refill: %w (epoch %d)", ErrKeyChanged, keys.Current)
	}
	w.seen[keys.Current] = raw
	w.mu.Unlock()

	fresh, err := w.conn.IssueTokens(ctx, w.sess, key, w.opts.Batch)
	if err != nil {
		return fmt.Errorf("wallet refill: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := w.toks[:0:0]
	for _, t := range w.toks {
		if t.Epoch+1 >= keys.Current { // current or previous epoch
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

// save serializes toks into the store.
func (w *Wallet) save(toks []tokens.Token) error {
	buf := make([]byte, 5, 5+len(toks)*tokens.TokenSize)
	buf[0] = walletVersion
	binary.BigEndian.PutUint32(buf[1:], uint32(len(toks)))
	for i := range toks {
		raw, err := toks[i].MarshalBinary()
		if err != nil {
			return err
		}
		buf = append(buf, raw...)
	}
	if err := w.store.Save(buf); err != nil {
		return fmt.Errorf("save wallet: %w", err)
	}
	return nil
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

// RefillErr is the error of the last background refill, if it failed.
func (w *Wallet) RefillErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fillErr
}

// seenKeys returns the token public keys this wallet was shown, by epoch.
func (w *Wallet) seenKeys() map[uint32][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[uint32][]byte, len(w.seen))
	for e, k := range w.seen {
		out[e] = k
	}
	return out
}

// noteKey records the token key shown for epoch, as a refill does.
func (w *Wallet) noteKey(epoch uint32, raw []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev, ok := w.seen[epoch]; ok && !bytes.Equal(prev, raw) {
		return fmt.Errorf("wallet: %w (epoch %d)", ErrKeyChanged, epoch)
	}
	w.seen[epoch] = raw
	return nil
}

// TakeN returns up to n tokens at once, refilling as needed, and persists
// the wallet once: for an outbox sending many envelopes. Fewer than n come
// back (with the refill's error) when the quota or the server runs out.
func (w *Wallet) TakeN(ctx context.Context, n int) ([][]byte, error) {
	var refillErr error
	for range (n+w.opts.Batch-1)/w.opts.Batch + 1 {
		if w.Len() >= n || w.conn == nil {
			break
		}
		if refillErr = w.Refill(ctx); refillErr != nil {
			break
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n = min(n, len(w.toks))
	if n == 0 {
		if refillErr == nil {
			refillErr = fmt.Errorf("wallet: no tokens")
		}
		return nil, refillErr
	}
	rest := w.toks[n:]
	if err := w.save(rest); err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	for i := range out {
		raw, err := w.toks[i].MarshalBinary()
		if err != nil {
			return nil, err
		}
		out[i] = raw
	}
	w.toks = rest
	return out, refillErr
}
