package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/keyset"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/tor"
)

// keyFiles are the files of the key set this node uses, by name: what
// every node of one server must hold alike (docs/adr/0039).
func keyFiles(cfg *config.Config) map[string]string {
	files := map[string]string{
		KeyFile:              filepath.Join(cfg.DataDir, KeyFile),
		TokenKeyFile:         filepath.Join(cfg.DataDir, TokenKeyFile),
		accounts.KeyFileName: filepath.Join(cfg.DataDir, accounts.KeyFileName),
	}
	if cfg.KT {
		files[KTNoteKeyFile] = filepath.Join(cfg.DataDir, KTNoteKeyFile)
		files[KTVRFKeyFile] = filepath.Join(cfg.DataDir, KTVRFKeyFile)
	}
	if cfg.ServesOnion() {
		files[tor.OnionKeyFile] = cfg.OnionKeyPath()
	}
	return files
}

// openKeyBook opens the record of the key set on a PostgreSQL store and
// refuses a node whose data directory lacks a key the database records:
// such a node would create a key of its own and present another server.
// It returns nil for the bbolt store, which one node owns.
func openKeyBook(ctx context.Context, cfg *config.Config) (*keyset.Book, error) {
	if !cfg.StorePostgres() {
		return nil, nil
	}
	book, err := keyset.Open(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	recorded, err := book.Recorded(ctx)
	if err != nil {
		book.Close()
		return nil, err
	}
	files := keyFiles(cfg)
	var missing []string
	for _, name := range recorded {
		path, used := files[name]
		if !used {
			continue
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		book.Close()
		return nil, fmt.Errorf("the database records this server's key set, but %s lacks %s: a node never makes keys of its own for a server that has some; "+
			"copy the key set (%s) of a running node into it (docs/scaling.md)",
			cfg.DataDir, strings.Join(missing, ", "), strings.Join(recorded, ", "))
	}
	return book, nil
}

// checkKeySet loads (creating on the first node) every key of the set
// and checks their fingerprints against the database's record
// (keyset.Book.Check): the pin, the token issuer's public key of epoch 0
// (derived from tokens.key), the OPAQUE public key, the KT note verifier
// key and VRF public key, and the onion service's public key.
func checkKeySet(ctx context.Context, cfg *config.Config, id *Identity, book *keyset.Book) error {
	pin := id.Pin()
	keys := []keyset.Key{{Name: KeyFile, Fingerprint: keyset.Fingerprint(pin[:])}}
	secret, err := LoadOrCreateTokenSecret(cfg.DataDir)
	if err != nil {
		return err
	}
	issuer, err := tokens.NewIssuer(secret)
	if err != nil {
		return err
	}
	tpk, err := issuer.PublicKey(0)
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	traw, err := tpk.MarshalBinary()
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	keys = append(keys, keyset.Key{Name: TokenKeyFile, Fingerprint: keyset.Fingerprint(traw)})
	if cfg.KT {
		kk, err := LoadOrCreateKTKeys(cfg.DataDir)
		if err != nil {
			return err
		}
		keys = append(keys,
			keyset.Key{Name: KTNoteKeyFile, Fingerprint: keyset.Fingerprint([]byte(kk.VKey))},
			keyset.Key{Name: KTVRFKeyFile, Fingerprint: keyset.Fingerprint(kk.VRF.PublicKey())})
	}
	if cfg.ServesOnion() {
		ok, err := tor.LoadOrCreateOnionKey(cfg.OnionKeyPath())
		if err != nil {
			return err
		}
		keys = append(keys, keyset.Key{Name: tor.OnionKeyFile, Fingerprint: keyset.Fingerprint(ok.Public().(ed25519.PublicKey))})
	}
	if err := book.Check(ctx, keys); err != nil {
		return err
	}
	// The OPAQUE key last: its file is bound to the pin, and a node with
	// another tls.key is told so above, by name, rather than here.
	ak, err := accounts.LoadOrCreateKeys(cfg.DataDir, pin[:])
	if err != nil {
		return err
	}
	return book.Check(ctx, []keyset.Key{{Name: accounts.KeyFileName, Fingerprint: keyset.Fingerprint(ak.PublicKey())}})
}
