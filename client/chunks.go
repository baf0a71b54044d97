package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Chunking (docs/protocol.md §3.3, §7). A payload larger than one
// envelope can carry — a Welcome with the ratchet tree of a big group —
// is cut with padding.Split into chunks, each sent as its own envelope of
// content type sealed.ContentChunk (each paying its own token, each with
// its own message ID), after a 2-byte prefix naming the payload's own
// content type. The receiver keeps the chunks in its encrypted state until
// all have arrived, checks that one sender sealed them all, joins them and
// processes the payload as if it had come in one envelope.

// defaultMaxEnvelope is the reference server's max_envelope for a policy
// (docs/protocol.md §4.3), used before the server's hello is known.
func defaultMaxEnvelope(p padding.Policy) int { return wire.MaxEnvelope(p) }

// maxContent is the most content one envelope carries to this server:
// what the pinned policy gives, never less (a server announcing a smaller
// max_envelope is refused in the handshake, ErrPolicy), so where a
// message is cut into chunks depends on the pin alone.
func (c *Client) maxContent() int {
	policy := c.Policy()
	maxEnv := defaultMaxEnvelope(policy)
	p, err := sealed.PlaintextPolicy(policy, tokens.TokenSize)
	if err != nil {
		return 0
	}
	return sealed.MaxContentFor(p, maxEnv, len(c.prof.Handle))
}

// chunkedType prefixes a chunked payload with its own content type.
const chunkTypeSize = 2

// enqueueContent queues payload to one destination, in chunks if it does
// not fit one envelope.
func (c *Client) enqueueContent(tx *state.Tx, e *outboxEntry) error {
	max := c.maxContent()
	if max <= 0 || len(e.Payload) <= max {
		return c.enqueue(tx, e)
	}
	var id padding.ChunkID
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	whole := binary.BigEndian.AppendUint16(make([]byte, 0, chunkTypeSize+len(e.Payload)), uint16(e.Type))
	whole = append(whole, e.Payload...)
	chunks, err := padding.Split(id, whole, max)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTooLong, err)
	}
	for _, ch := range chunks {
		part := *e
		part.Type, part.Payload = sealed.ContentChunk, ch
		if err := c.enqueue(tx, &part); err != nil {
			return err
		}
	}
	return nil
}

// Incomplete chunk sets are kept chunk by chunk (docs/storage.md): a
// small record per set in bucketChunkSets, and each chunk under its own
// key in bucketChunkParts, so that storing a chunk costs the same however
// many arrived before it, and joining reads each chunk once. A set is
// keyed by mailbox, sender identity key and payload ID: chunks sealed by
// another sender can never land in someone else's set. Every chunk's
// sealed sender is checked against key transparency before it is kept
// (process), so a stranger forging senders costs one lookup an envelope
// and no storage; what real accounts can make this client keep is capped
// per sender and in total, in sets and in bytes.
const (
	bucketChunkSets  = "chunk-sets"
	bucketChunkParts = "chunk-parts"
	// bucketChunks held whole sets, re-encoded at every chunk, before
	// chunks were kept one by one; what is left in it is dropped.
	bucketChunks = "chunks"
)

// Bounds on incomplete chunk sets. A payload larger than a sender's
// share is refused: the largest legitimate one, a Welcome carrying the
// ratchet tree of a group of thousands, is a few MiB.
const (
	// chunkStaleAfter is when an incomplete chunk set is given up. A
	// sender's chunks leave its outbox together; a set still incomplete
	// after three days lost a chunk.
	chunkStaleAfter = 72 * time.Hour
	// maxChunkSetsPerSender and maxChunkBytesPerSender bound what one
	// sender's incomplete sets hold; a new set beyond them pushes out
	// that sender's oldest.
	maxChunkSetsPerSender  = 4
	maxChunkBytesPerSender = 16 << 20
	// maxChunkSets and maxChunkBytes bound all incomplete sets; beyond
	// them the oldest set of the sender holding the most bytes goes.
	maxChunkSets  = 64
	maxChunkBytes = 64 << 20
)

// chunkSet is what is known of one incomplete set; its chunks are in
// bucketChunkParts.
type chunkSet struct {
	Sender   string    // the handle that sealed the first chunk
	Key      []byte    // its identity key
	Count    int       // chunks in the set
	Have     int       // chunks kept so far
	Bytes    int       // their total size
	Received time.Time // its first chunk
	Touched  time.Time // its latest chunk
}

// chunkSetKey names the set of payload id sealed by sender to mailbox.
func chunkSetKey(mailbox wire.ID, sender ed25519.PublicKey, id padding.ChunkID) []byte {
	k := make([]byte, 0, len(mailbox)+len(sender)+len(id))
	k = append(k, mailbox[:]...)
	k = append(k, sender...)
	return append(k, id[:]...)
}

func chunkPartKey(set []byte, index int) []byte {
	k := make([]byte, len(set), len(set)+2)
	copy(k, set)
	return binary.BigEndian.AppendUint16(k, uint16(index))
}

// addChunk keeps one chunk, whose sealed sender the caller has checked.
// Once the set is complete it returns the joined payload, its content
// type and the set's key, which the caller deletes (deleteChunkSet) in
// the transaction that commits the payload's effects (so a payload whose
// processing is deferred is joined again next time). The work is bounded
// per chunk: one set record, one chunk, and a scan of at most
// maxChunkSets set records when a set is new or grows past a cap.
func (c *Client) addChunk(mailbox wire.ID, op *sealed.Opened) (sealed.ContentType, []byte, []byte, error) {
	ch := op.Content
	id, err := padding.ChunkIDOf(ch)
	if err != nil {
		return 0, nil, nil, err
	}
	count := int(binary.BigEndian.Uint16(ch[10:12]))
	index := int(binary.BigEndian.Uint16(ch[8:10]))
	if count == 0 || count > padding.MaxChunks || index >= count {
		return 0, nil, nil, fmt.Errorf("chunk %d of %d", index, count)
	}
	if len(ch) > maxChunkBytesPerSender {
		return 0, nil, nil, fmt.Errorf("a chunk of %d bytes", len(ch))
	}
	key := chunkSetKey(mailbox, op.Sender.IdentityKey, id)
	var whole []byte
	err = c.store.Update(func(tx *state.Tx) error {
		var set chunkSet
		err := getJSON(tx, bucketChunkSets, key, &set)
		if errors.Is(err, state.ErrNoEntry) {
			set = chunkSet{Sender: op.Sender.Handle, Key: op.Sender.IdentityKey, Count: count, Received: c.opts.Now()}
		} else if err != nil {
			return err
		}
		if set.Sender != op.Sender.Handle || set.Count != count {
			return fmt.Errorf("chunks of one payload disagree on their sender or count")
		}
		part := chunkPartKey(key, index)
		if _, err := tx.Get(bucketChunkParts, part); err == nil {
			// A chunk delivered again (its payload's processing was
			// deferred): nothing new to keep.
		} else if !errors.Is(err, state.ErrNoEntry) {
			return err
		} else {
			set.Have++
			set.Bytes += len(ch)
			set.Touched = c.opts.Now()
			if set.Bytes > maxChunkBytesPerSender {
				if err := deleteChunkSet(tx, key, set.Count); err != nil {
					return err
				}
				return fmt.Errorf("a chunked payload from %s larger than %d bytes", op.Sender.Handle, maxChunkBytesPerSender)
			}
			if err := tx.Put(bucketChunkParts, part, ch); err != nil {
				return err
			}
			if err := putJSON(tx, bucketChunkSets, key, &set); err != nil {
				return err
			}
			if err := capChunkSets(tx, key); err != nil {
				return err
			}
		}
		if set.Have < set.Count {
			return nil
		}
		parts := make([][]byte, 0, set.Count)
		for i := range set.Count {
			p, err := tx.Get(bucketChunkParts, chunkPartKey(key, i))
			if err != nil {
				return fmt.Errorf("chunk %d of a complete set: %w", i, err)
			}
			parts = append(parts, p)
		}
		whole, err = padding.Join(parts)
		return err
	})
	if err != nil || whole == nil {
		return 0, nil, nil, err
	}
	if len(whole) < chunkTypeSize {
		return 0, nil, nil, fmt.Errorf("empty chunked payload")
	}
	return sealed.ContentType(binary.BigEndian.Uint16(whole)), whole[chunkTypeSize:], key, nil
}

// capChunkSets enforces the bounds after the set at key grew. Past a
// sender's bounds its own oldest sets go; past the totals, the sets that
// made no progress for the longest. The set at key goes only when it
// alone is over the bounds.
func capChunkSets(tx *state.Tx, key []byte) error {
	type held struct {
		key []byte
		set chunkSet
	}
	var all []held
	err := tx.ForEach(bucketChunkSets, func(k, v []byte) error {
		var s chunkSet
		if json.Unmarshal(v, &s) != nil {
			s = chunkSet{Received: time.Time{}} // unreadable: the oldest, first to go
		}
		all = append(all, held{append([]byte(nil), k...), s})
		return nil
	})
	if err != nil {
		return err
	}
	var self *held
	for i := range all {
		if string(all[i].key) == string(key) {
			self = &all[i]
		}
	}
	if self == nil {
		return nil
	}
	sender := string(self.set.Key)
	bytesOf := map[string]int{}
	setsOf := map[string]int{}
	total := 0
	for _, h := range all {
		bytesOf[string(h.set.Key)] += h.set.Bytes
		setsOf[string(h.set.Key)]++
		total += h.set.Bytes
	}
	gone := map[string]bool{}
	drop := func(h *held) error {
		gone[string(h.key)] = true
		bytesOf[string(h.set.Key)] -= h.set.Bytes
		setsOf[string(h.set.Key)]--
		total -= h.set.Bytes
		return deleteChunkSet(tx, h.key, h.set.Count)
	}
	// oldest returns the oldest set of sender s other than the new one,
	// or nil.
	oldest := func(s string) *held {
		var o *held
		for i := range all {
			h := &all[i]
			if gone[string(h.key)] || string(h.key) == string(key) || string(h.set.Key) != s {
				continue
			}
			if o == nil || h.set.Received.Before(o.set.Received) {
				o = h
			}
		}
		return o
	}
	for setsOf[sender] > maxChunkSetsPerSender || bytesOf[sender] > maxChunkBytesPerSender {
		o := oldest(sender)
		if o == nil {
			break
		}
		if err := drop(o); err != nil {
			return err
		}
	}
	for len(all)-len(gone) > maxChunkSets || total > maxChunkBytes {
		// The set that made no progress for the longest: a payload
		// being received keeps its set, while a flood of sets that
		// never grow goes first.
		var o *held
		for i := range all {
			h := &all[i]
			if gone[string(h.key)] || h == self {
				continue
			}
			if o == nil || h.set.Touched.Before(o.set.Touched) {
				o = h
			}
		}
		if o == nil {
			if err := drop(self); err != nil {
				return err
			}
			return fmt.Errorf("no room for a chunked payload from %s", self.set.Sender)
		}
		if err := drop(o); err != nil {
			return err
		}
	}
	return nil
}

// deleteChunkSet forgets the set at key and its chunks.
func deleteChunkSet(tx *state.Tx, key []byte, count int) error {
	for i := range min(count, padding.MaxChunks) {
		if err := tx.Delete(bucketChunkParts, chunkPartKey(key, i)); err != nil {
			return err
		}
	}
	return tx.Delete(bucketChunkSets, key)
}

// dropChunkSet forgets a complete set after its payload was processed.
func dropChunkSet(tx *state.Tx, key []byte) error {
	var set chunkSet
	if err := getJSON(tx, bucketChunkSets, key, &set); errors.Is(err, state.ErrNoEntry) {
		return nil
	} else if err != nil {
		return deleteChunkSet(tx, key, padding.MaxChunks)
	}
	return deleteChunkSet(tx, key, set.Count)
}

// dropStaleChunks forgets chunk sets that never completed, and whatever
// the older whole-set bucket still holds.
func (c *Client) dropStaleChunks() error {
	return c.store.Update(func(tx *state.Tx) error {
		type stale struct {
			key   []byte
			count int
		}
		var old []stale
		err := tx.ForEach(bucketChunkSets, func(k, v []byte) error {
			var set chunkSet
			if json.Unmarshal(v, &set) != nil {
				old = append(old, stale{append([]byte(nil), k...), padding.MaxChunks})
			} else if c.opts.Now().Sub(set.Received) > chunkStaleAfter {
				old = append(old, stale{append([]byte(nil), k...), set.Count})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, s := range old {
			if err := deleteChunkSet(tx, s.key, s.count); err != nil {
				return err
			}
		}
		var legacy [][]byte
		if err := tx.ForEach(bucketChunks, func(k, _ []byte) error {
			legacy = append(legacy, append([]byte(nil), k...))
			return nil
		}); err != nil {
			return err
		}
		for _, k := range legacy {
			if err := tx.Delete(bucketChunks, k); err != nil {
				return err
			}
		}
		return nil
	})
}
