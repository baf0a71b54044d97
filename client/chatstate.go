package client

import (
	"encoding/hex"
	"time"

	"github.com/quicprochat/qpc/client/state"
)

// QueuedSince reports, for each conversation (by Event.ConvID, the hex
// MLS group ID) with envelopes waiting in the outbox, when the oldest of
// them was queued. Entries to one member leave in order, so an own
// message of such a conversation whose Event.At is not before that time
// has not reached the server for every member yet ("queued"); an own
// message before it, or in a conversation not listed, was acknowledged
// by the server ("sent"). For delivery marks in chat front ends.
func (c *Client) QueuedSince() (map[string]time.Time, error) {
	c.op.Lock()
	defer c.op.Unlock()
	out := map[string]time.Time{}
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEachSeq(bucketOutbox, 0, func(seq uint64, v []byte) error {
			if c.retiring.has(seq) {
				return nil // acknowledged (retire.go)
			}
			e := new(outboxEntry)
			if err := jsonUnmarshal(v, e); err != nil {
				return err
			}
			id := hex.EncodeToString(e.Conv)
			if t, ok := out[id]; !ok || e.Queued.Before(t) {
				out[id] = e.Queued
			}
			return nil
		})
	})
	return out, err
}
