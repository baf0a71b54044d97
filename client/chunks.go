package client

import (
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
func defaultMaxEnvelope(p padding.Policy) int {
	return p.Max() - wire.HeaderSize - (wire.IDSize + wire.MessageIDSize + 2 + wire.MaxAuthSize + 3)
}

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

// chunkSet is the chunks of one payload received so far.
type chunkSet struct {
	Sender   string // the handle that sealed the first chunk
	Key      []byte // its identity key
	Count    int
	Chunks   map[int][]byte
	Received time.Time
}

// bucketChunks holds incomplete chunk sets, by mailbox and payload ID.
const bucketChunks = "chunks"

// chunkStaleAfter is when an incomplete chunk set is given up.
const chunkStaleAfter = 7 * 24 * time.Hour

// addChunk stores one chunk. Once the set is complete it returns the
// joined payload, its content type and the set's key, which the caller
// deletes in the transaction that commits the payload's effects (so a
// payload whose processing is deferred is joined again next time).
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
	key := append(mailbox[:len(mailbox):len(mailbox)], id[:]...)
	var set chunkSet
	var whole []byte
	err = c.store.Update(func(tx *state.Tx) error {
		err := getJSON(tx, bucketChunks, key, &set)
		if errors.Is(err, state.ErrNoEntry) {
			set = chunkSet{Sender: op.Sender.Handle, Key: op.Sender.IdentityKey, Count: count, Chunks: map[int][]byte{}, Received: c.opts.Now()}
		} else if err != nil {
			return err
		}
		if set.Sender != op.Sender.Handle || string(set.Key) != string(op.Sender.IdentityKey) || set.Count != count {
			return fmt.Errorf("chunks of one payload from two senders")
		}
		set.Chunks[index] = ch
		if len(set.Chunks) == set.Count {
			parts := make([][]byte, 0, len(set.Chunks))
			for _, p := range set.Chunks {
				parts = append(parts, p)
			}
			if whole, err = padding.Join(parts); err != nil {
				return err
			}
		}
		return putJSON(tx, bucketChunks, key, &set)
	})
	if err != nil || whole == nil {
		return 0, nil, nil, err
	}
	if len(whole) < chunkTypeSize {
		return 0, nil, nil, fmt.Errorf("empty chunked payload")
	}
	return sealed.ContentType(binary.BigEndian.Uint16(whole)), whole[chunkTypeSize:], key, nil
}

// dropStaleChunks forgets chunk sets that never completed.
func (c *Client) dropStaleChunks() error {
	return c.store.Update(func(tx *state.Tx) error {
		var stale [][]byte
		err := tx.ForEach(bucketChunks, func(k, v []byte) error {
			var set chunkSet
			if json.Unmarshal(v, &set) != nil || c.opts.Now().Sub(set.Received) > chunkStaleAfter {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := tx.Delete(bucketChunks, k); err != nil {
				return err
			}
		}
		return nil
	})
}
