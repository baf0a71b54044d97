package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/quicprochat/qpc/internal/secretfile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg"
	"github.com/quicprochat/qpc/kt/vrf"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/tokens"
	"golang.org/x/mod/sumdb/note"
)

// Key-transparency files in the data directory, beside kt.DBFile and
// kt.LogDir.
const (
	KTNoteKeyFile = "kt-note.key" // the checkpoint signer (a note signer key)
	KTVRFKeyFile  = "kt-vrf.key"  // the VRF seed (32 bytes)
)

// KTKeys are the directory's secret keys and the public values a client
// pins: the note verifier key, the VRF public key and the configuration.
type KTKeys struct {
	Signer   note.Signer
	Verifier note.Verifier
	VKey     string
	VRF      *vrf.PrivateKey
}

// LoadOrCreateKTKeys reads the KT keys from dir, creating them (mode 0600)
// the first time. The log origin is "qpc-kt-" and 16 random hex digits, so
// two servers' logs never share a name.
func LoadOrCreateKTKeys(dir string) (*KTKeys, error) {
	skeyPath, vrfPath := filepath.Join(dir, KTNoteKeyFile), filepath.Join(dir, KTVRFKeyFile)
	skey, err := os.ReadFile(skeyPath)
	if errors.Is(err, fs.ErrNotExist) {
		var id [8]byte
		rand.Read(id[:])
		s, _, err := note.GenerateKey(rand.Reader, "qpc-kt-"+hex.EncodeToString(id[:]))
		if err != nil {
			return nil, fmt.Errorf("kt keys: %w", err)
		}
		if err := writeSecret(skeyPath, []byte(s+"\n")); err != nil {
			return nil, err
		}
		skey = []byte(s + "\n")
	} else if err != nil {
		return nil, fmt.Errorf("kt keys: %w", err)
	}
	seed, err := os.ReadFile(vrfPath)
	if errors.Is(err, fs.ErrNotExist) {
		seed = make([]byte, vrf.SeedSize)
		rand.Read(seed)
		if err := writeSecret(vrfPath, seed); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("kt keys: %w", err)
	}
	k := &KTKeys{}
	if k.Signer, err = note.NewSigner(strings.TrimSpace(string(skey))); err != nil {
		return nil, fmt.Errorf("kt keys: %s: %w", skeyPath, err)
	}
	if k.VRF, err = vrf.NewPrivateKey(seed); err != nil {
		return nil, fmt.Errorf("kt keys: %s: %w", vrfPath, err)
	}
	// The verifier key is derived from the signer key's public half.
	k.VKey, err = vkeyOf(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, err
	}
	if k.Verifier, err = note.NewVerifier(k.VKey); err != nil {
		return nil, fmt.Errorf("kt keys: %w", err)
	}
	return k, nil
}

// vkeyOf turns a note signer key "PRIVATE+KEY+<name>+<hash>+<key>" into
// its verifier key "<name>+<hash>+<public key>".
func vkeyOf(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("kt keys: not a note signer key")
	}
	return note.NewEd25519VerifierKey(parts[2], ed25519PublicFromNoteKey(parts[4]))
}

func writeSecret(path string, data []byte) error {
	if err := secretfile.Create(path, data); err != nil {
		return fmt.Errorf("kt keys: %w", err)
	}
	return nil
}

// KTConfig is the directory configuration clients pin for this server.
func KTConfig(c *config.Config, k *KTKeys) kt.Config {
	return kt.Config{
		Origin:        k.Signer.Name(),
		VRFPublicKey:  k.VRF.PublicKey(),
		EpochInterval: c.KTEpoch.Duration,
		MinUpdates:    uint32(c.KTMinUpdates),
	}
}

// OpenKT opens the key-transparency directory in the data directory and
// starts its epochs. The caller closes it after the server shut down.
//
// opened, if not nil, gets the directory as soon as it can serve its
// public log (kt.DirectoryOptions.Opened), before the first checkpoint is
// awaited: start the kt_listen handler there, since an auditing witness
// in kt_witness_policy reads the update lists from it before it cosigns.
func OpenKT(ctx context.Context, c *config.Config, k *KTKeys, log *slog.Logger, opened func(*kt.Directory)) (*kt.Directory, error) {
	o := kt.DirectoryOptions{
		Opened:        opened,
		Dir:           c.DataDir,
		LogSigner:     k.Signer,
		LogVerifier:   k.Verifier,
		VRFKey:        k.VRF,
		EpochInterval: c.KTEpoch.Duration,
		MinUpdates:    c.KTMinUpdates,
		Logger:        log,
	}
	c.KTDirectoryLimits(&o)
	policy, err := c.KTWitnessPolicyParsed()
	if err != nil {
		return nil, err
	}
	o.WitnessPolicy = policy
	// On PostgreSQL the directory is one node of several sharing the
	// database (docs/key-transparency.md, "Several nodes"): its tree, log
	// and queue of publishes are there, and the node holding the
	// sequencer lease makes the epochs. Every node must load the same
	// KT keys (kt-note.key, kt-vrf.key in the data directory).
	var node *ktpg.Node
	if c.StorePostgres() {
		if node, err = ktpg.Configure(ctx, c.Store, &o, ktpg.Options{Logger: log}); err != nil {
			return nil, err
		}
	}
	d, err := kt.OpenDirectory(ctx, o)
	if err != nil {
		if node != nil {
			node.Close()
		}
		return nil, err
	}
	d.Start()
	return d, nil
}

// ed25519PublicFromNoteKey derives the Ed25519 public key from the base64
// key field of a note signer key (algorithm byte 0x01 then the 32-byte
// seed; golang.org/x/mod/sumdb/note). An unusable field gives a nil key,
// which NewEd25519VerifierKey rejects.
func ed25519PublicFromNoteKey(field string) ed25519.PublicKey {
	raw, err := base64.StdEncoding.DecodeString(field)
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil
	}
	return ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
}

// PublishTokenKeys commits the token epoch length once, under
// kt.TokenEpochLabel, and the token public key of the current and the
// next token epoch, each once, under kt.TokenKeyLabel, and again each
// token epoch until ctx ends. Clients check the length and the key they
// are given against them (protocol.Wallet.Key), so the server can hand no
// user a key of its own, nor epochs of its own, to tag its tokens. The
// length cannot change once committed: a second version is an alarm for
// every client.
func PublishTokenKeys(ctx context.Context, d *kt.Directory, issuer *tokens.Issuer, epoch time.Duration, log *slog.Logger) {
	PublishTokenKeysNotify(ctx, d, issuer, epoch, log, nil)
}

// PublishTokenKeysNotify is PublishTokenKeys calling served, after each
// round, with the newest token epoch whose key is committed and served
// (the length included), if any. What a round misses it enqueues at once
// and waits for together, so a fresh server has everything a client
// checks within one KT epoch: a server that waits for the first call
// before it serves never answers a registration it cannot complete.
func PublishTokenKeysNotify(ctx context.Context, d *kt.Directory, issuer *tokens.Issuer, epoch time.Duration, log *slog.Logger, served func(tokenEpoch uint32)) {
	publish := func() {
		type item struct {
			label string
			value []byte
			epoch uint32 // of a token key; 0 for the length
		}
		var items []item
		lengthOK := false
		if v, err := d.LatestVersion(kt.TokenEpochLabel); err == nil && v == 0 {
			items = append(items, item{label: kt.TokenEpochLabel, value: kt.TokenEpochValue(epoch)})
		} else if err == nil {
			lengthOK = true
		}
		cur := issuer.Epoch()
		var newest uint32
		have := false
		for e := cur; e <= cur+1; e++ {
			label := kt.TokenKeyLabel(e)
			v, err := d.LatestVersion(label)
			if err != nil {
				continue
			}
			if v > 0 {
				newest, have = e, true
				continue
			}
			pk, err := issuer.PublicKey(e)
			if err != nil {
				log.Warn("kt: token key", "epoch", e, "err", err)
				continue
			}
			raw, err := pk.MarshalBinary()
			if err != nil {
				continue
			}
			items = append(items, item{label: label, value: raw, epoch: e})
		}
		// Published together, so they are served in the same KT epoch;
		// Publish withdraws what is still queued when ctx ends. Each is
		// a first version: of several nodes sharing the directory, each
		// runs this, and a label another node published meanwhile is
		// refused (kt.ErrVersionTaken), never given a second version.
		results := make([]kt.Published, len(items))
		var wg sync.WaitGroup
		for i, it := range items {
			wg.Go(func() {
				var err error
				results[i], err = d.PublishFirst(ctx, it.label, it.value)
				if errors.Is(err, kt.ErrVersionTaken) {
					results[i] = kt.Published{} // committed by another node
				}
			})
		}
		wg.Wait()
		for i, p := range results {
			switch {
			case p.Err != nil:
				if ctx.Err() == nil {
					log.Warn("kt: publishing a token key or the token epoch length failed", "label", items[i].label, "err", p.Err)
				}
			case items[i].label == kt.TokenEpochLabel:
				lengthOK = true
			case !have || items[i].epoch > newest:
				newest, have = items[i].epoch, true
			}
		}
		if served != nil && have && lengthOK {
			served(newest)
		}
	}
	publish()
	// Check a few times per token epoch, so the next key is in well
	// before it is used.
	t := time.NewTicker(max(epoch/8, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			publish()
		}
	}
}
