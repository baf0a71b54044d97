package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/quicprochat/qpc/client/backup"
	"github.com/quicprochat/qpc/client/state"
)

// Backups. ExportBackup seals a snapshot of the local state into a
// passphrase-encrypted OpenPGP message (package backup); RestoreBackup
// makes a new local state from one on another device (or the same one,
// after a loss).
//
// What a backup holds: the whole profile (server address, KT pin and
// newest checkpoint, handle, identity key, MLS signature key, the
// published KeyPackage with its private keys, the intro mailbox, the
// device ID), the contacts, the conversations with their MLS group state
// and conversation mailboxes, the outbox, the alarms, the set of message
// IDs already processed, the receipt settings and schedule, and, when
// asked for, the history with the read marks that point into it. What it does
// not hold: the token wallet (tokens are bearer credentials bound to the
// account session) and the account session itself, so a restored client
// needs `qpc login` before it can send.
//
// A backup is a snapshot. MLS ratchets forward with every message and
// every commit: if the original device keeps running after the export,
// it and the restored copy diverge (each consumes messages the other
// never sees, and their group states split). The restored device must
// replace the original, never run beside it.
//
// The payload is a JSON document (backupDoc), versioned by its "format"
// and "version" fields.

const (
	backupFormat  = "qpc-backup"
	backupVersion = 1
)

// backupDoc is the payload inside the OpenPGP message.
type backupDoc struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	History bool      `json:"history"`
	Profile *profile  `json:"profile"`
	// Keyed and Sequenced hold the entries of the state's buckets by
	// bucket name (backupKeyed, backupSequenced).
	Keyed     map[string][]backupEntry `json:"keyed"`
	Sequenced map[string][]backupEntry `json:"sequenced"`
}

// backupEntry is one entry of a bucket: Key for a keyed bucket, Seq (the
// original sequence number, kept to order the entries) for a sequenced one.
type backupEntry struct {
	Key   []byte `json:"k,omitempty"`
	Seq   uint64 `json:"s,omitempty"`
	Value []byte `json:"v"`
}

// The buckets a backup carries. The wallet (in meta) and the
// outbox-tokens bucket (tokens assigned to outbox entries) stay behind.
var (
	backupKeyed     = []string{bucketContacts, bucketConvs, bucketConvStates, bucketConvSent, bucketConvOut, bucketConvGroup, bucketConvRatchets, bucketSeen, bucketSettings, bucketUnread, bucketDelivery, bucketChunks, bucketChunkSets, bucketChunkParts, bucketReadMarks, bucketOneTimeKPs, bucketInvites}
	backupSequenced = []string{bucketOutbox, bucketAlarms, bucketHistory, bucketReceipts}
)

// ErrBackupVersion reports a backup this version of qpc cannot read.
var ErrBackupVersion = errors.New("backup: made by a newer qpc, or not a qpc backup")

// ExportBackup writes a backup of the local state to w, encrypted under
// passphrase (OpenPGP, Argon2id and AES-256-OCB; see package backup).
// withHistory includes the conversation history. The account session and
// the token wallet are left out: a restored client must `qpc login`. See
// RestoreBackup for the caveat on running two copies.
func (c *Client) ExportBackup(w io.Writer, passphrase []byte, withHistory bool) error {
	if len(passphrase) == 0 {
		return errors.New("backup: empty passphrase")
	}
	c.op.Lock()
	c.retireAll() // sent entries out of the outbox first (retire.go)
	doc := &backupDoc{
		Format: backupFormat, Version: backupVersion, Created: c.opts.Now().UTC(), History: withHistory,
		Keyed: map[string][]backupEntry{}, Sequenced: map[string][]backupEntry{},
	}
	err := c.store.View(func(tx *state.Tx) error {
		raw, err := tx.Get(bucketMeta, keyProfile)
		if err != nil {
			return err
		}
		p := new(profile)
		if err := json.Unmarshal(raw, p); err != nil {
			return fmt.Errorf("%w: profile: %v", state.ErrCorrupt, err)
		}
		p.Session = nil
		if !withHistory {
			p.RecvCursor = 0
		}
		doc.Profile = p
		for _, b := range backupKeyed {
			if b == bucketReadMarks && !withHistory {
				continue // they point into the history; restoreReadMarks starts afresh
			}
			err := tx.ForEach(b, func(k, v []byte) error {
				doc.Keyed[b] = append(doc.Keyed[b], backupEntry{Key: k, Value: v})
				return nil
			})
			if err != nil {
				return err
			}
		}
		for _, b := range backupSequenced {
			if b == bucketHistory && !withHistory {
				continue
			}
			err := tx.ForEachSeq(b, 0, func(seq uint64, v []byte) error {
				doc.Sequenced[b] = append(doc.Sequenced[b], backupEntry{Seq: seq, Value: v})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	c.op.Unlock()
	if err != nil {
		return fmt.Errorf("reading the local state: %w", err)
	}
	payload, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	defer clear(payload)
	return backup.Export(w, payload, passphrase, nil)
}

// RestoreBackup makes a new local state in opts.Home (it fails if one
// exists there) from the backup in r, and opens it with opts.Passphrase.
// prompt is asked for the backup's passphrase (attempt counts from 1)
// until it opens the backup, at most backup.DefaultMaxTries times; errors
// wrap backup.ErrPassphrase, backup.ErrTooManyTries, backup.ErrCorrupt or
// ErrBackupVersion. On any of these nothing is left in opts.Home.
//
// Then, for a registered profile, it rejoins: it looks its own handle up
// in key transparency and requires the published identity key and device
// key to be the restored ones (else it removes the new state and fails),
// and it runs a Sync, which resumes reading the conversation mailboxes
// and the intro mailbox where the backup left off. A failure of that Sync
// is logged, not returned: the state is kept (messages may have been
// consumed already) and the next Sync retries.
//
// The restored client has no account session and no tokens: Login it
// before sending. It must replace the device the backup came from; the
// two must not both keep running (their MLS states would diverge).
func RestoreBackup(ctx context.Context, r io.ReadSeeker, prompt func(attempt int) ([]byte, error), opts Options) (*Client, error) {
	if opts.Home == "" {
		return nil, ErrNoHome
	}
	opts.setDefaults()
	path := filepath.Join(opts.Home, state.FileName)
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("restore into %s: %w", opts.Home, state.ErrExists)
	}
	payload, err := backup.ImportWithPrompt(r, prompt, 0, nil)
	if err != nil {
		return nil, err
	}
	defer clear(payload)
	doc, err := parseBackup(payload)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(opts.Home)
	madeDir := errors.Is(statErr, os.ErrNotExist)
	c, err := restoreState(doc, opts)
	if err != nil {
		removeRestored(opts.Home, madeDir)
		return nil, err
	}
	if c.prof.Handle == "" || len(c.prof.KTPublished) == 0 {
		return c, nil // nothing published to check, nothing to read yet
	}
	if err := c.checkOwnBinding(ctx); err != nil {
		c.Close()
		removeRestored(opts.Home, madeDir)
		return nil, err
	}
	if _, err := c.Sync(ctx); err != nil && !errors.Is(err, ErrQueued) {
		c.log.Warn("the first sync after the restore failed; the next one retries", "err", err)
	}
	return c, nil
}

func removeRestored(home string, madeDir bool) {
	os.Remove(filepath.Join(home, state.FileName))
	if madeDir {
		os.Remove(home)
	}
}

// parseBackup decodes and checks a backup document.
func parseBackup(payload []byte) (*backupDoc, error) {
	doc := new(backupDoc)
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBackupVersion, err)
	}
	if doc.Format != backupFormat || doc.Version != backupVersion {
		return nil, fmt.Errorf("%w (format %q version %d)", ErrBackupVersion, doc.Format, doc.Version)
	}
	p := doc.Profile
	if p == nil || p.Server == "" {
		return nil, fmt.Errorf("%w: no profile", backup.ErrCorrupt)
	}
	if _, err := p.ktPin().Verifier(); err != nil {
		return nil, fmt.Errorf("%w: kt pin: %v", backup.ErrCorrupt, err)
	}
	if p.Handle != "" && len(p.IdentityKey) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: identity key", backup.ErrCorrupt)
	}
	for b := range doc.Keyed {
		if !slices.Contains(backupKeyed, b) {
			return nil, fmt.Errorf("%w: unknown bucket %q", ErrBackupVersion, b)
		}
	}
	for b := range doc.Sequenced {
		if !slices.Contains(backupSequenced, b) {
			return nil, fmt.Errorf("%w: unknown bucket %q", ErrBackupVersion, b)
		}
	}
	return doc, nil
}

// restoreState creates the state from doc in one transaction and opens
// the client on it.
func restoreState(doc *backupDoc, opts Options) (*Client, error) {
	st, err := state.Create(opts.Home, opts.Passphrase, opts.KDF)
	if err != nil {
		return nil, err
	}
	p := doc.Profile
	p.Session = nil
	var hist renumbering
	err = st.Update(func(tx *state.Tx) error {
		for _, b := range backupKeyed {
			for _, e := range doc.Keyed[b] {
				if err := tx.Put(b, e.Key, e.Value); err != nil {
					return err
				}
			}
		}
		for _, b := range backupSequenced {
			entries := slices.Clone(doc.Sequenced[b])
			slices.SortStableFunc(entries, func(x, y backupEntry) int {
				switch {
				case x.Seq < y.Seq:
					return -1
				case x.Seq > y.Seq:
					return 1
				}
				return 0
			})
			for _, e := range entries {
				seq, err := tx.Append(b, e.Value)
				if err != nil {
					return err
				}
				if b == bucketHistory {
					hist = append(hist, renumbered{e.Seq, seq})
				}
			}
		}
		// The history is renumbered from 1: move Recv's cursor and the
		// read marks along.
		p.RecvCursor = hist.renumber(p.RecvCursor)
		if err := restoreReadMarks(tx, hist); err != nil {
			return err
		}
		raw, err := json.Marshal(p)
		if err != nil {
			return err
		}
		return tx.Put(bucketMeta, keyProfile, raw)
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("writing the restored state: %w", err)
	}
	c := newClient(st, opts)
	c.prof = p
	v, err := p.ktPin().Verifier()
	if err == nil && len(p.Checkpoint) > 0 {
		err = v.SetLatest(p.Checkpoint)
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("%w: kt state: %v", backup.ErrCorrupt, err)
	}
	v.SetClock(opts.Now, opts.KTMaxEpochAge)
	c.v = v
	return c, nil
}

// renumbered is a history entry's sequence number in the backup and in the
// restored state.
type renumbered struct{ old, new uint64 }

// renumbering lists the restored history entries in order.
type renumbering []renumbered

// renumber maps a position in the backup's history (the last entry read,
// say) to the restored one: the new number of the last restored entry at
// or before old, or 0 if there is none.
func (h renumbering) renumber(old uint64) uint64 {
	i := sort.Search(len(h), func(i int) bool { return h[i].old > old })
	if i == 0 {
		return 0
	}
	return h[i-1].new
}

// restoreReadMarks renumbers the restored read marks (bucketReadMarks) as
// the history was. A backup without them (made without the history, or
// before they existed) counts the whole restored history as read: the
// baseline is its end.
func restoreReadMarks(tx *state.Tx, hist renumbering) error {
	marks := map[string]readMark{}
	err := tx.ForEach(bucketReadMarks, func(k, v []byte) error {
		var m readMark
		if err := jsonUnmarshal(v, &m); err != nil {
			return err
		}
		marks[string(k)] = readMark{History: hist.renumber(m.History)}
		return nil
	})
	if err != nil {
		return err
	}
	if _, ok := marks[string(readBaselineKey)]; !ok {
		var end uint64
		if len(hist) > 0 {
			end = hist[len(hist)-1].new
		}
		marks[string(readBaselineKey)] = readMark{History: end}
	}
	for k, m := range marks {
		if err := putJSON(tx, bucketReadMarks, []byte(k), m); err != nil {
			return err
		}
	}
	return nil
}

// checkOwnBinding looks the user's own handle up in key transparency and
// requires the identity and device keys there to be this state's.
func (c *Client) checkOwnBinding(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	p := c.prof
	res, b, err := c.lookupLabel(ctx, p.Handle)
	if err != nil {
		return fmt.Errorf("checking your key-transparency record: %w", err)
	}
	if res.Version == 0 || b == nil || b.Tombstone || len(b.IdentityKeys) == 0 {
		return fmt.Errorf("the key-transparency directory has no live account %s: this backup cannot be used", p.Handle)
	}
	if !b.IdentityKeys[0].Equal(p.IdentityKey.Public()) {
		return fmt.Errorf("the key-transparency directory shows another identity key for %s than this backup's: refusing to restore it", p.Handle)
	}
	if !slices.ContainsFunc(b.DeviceKeys, func(k []byte) bool { return bytes.Equal(k, p.MLSSigPub) }) {
		return fmt.Errorf("the key-transparency directory shows another device key for %s than this backup's: refusing to restore it", p.Handle)
	}
	return c.saveProfile()
}
