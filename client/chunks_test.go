package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/wire"
)

func chunkClient(t *testing.T) *Client {
	t.Helper()
	st, err := state.Create(t.TempDir(), []byte("pass"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	opts.setDefaults()
	c := newClient(st, opts)
	c.prof = &profile{Handle: "bob"}
	return c
}

type chunkSender struct {
	id sealed.SenderID
}

func newChunkSender(t *testing.T, handle string) chunkSender {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return chunkSender{sealed.SenderID{IdentityKey: pub, Handle: handle}}
}

// split cuts a payload of n bytes of content type ct into chunks of at
// most size bytes.
func split(t *testing.T, ct sealed.ContentType, n, size int) ([]byte, [][]byte) {
	t.Helper()
	payload := make([]byte, n)
	rand.Read(payload)
	var id padding.ChunkID
	rand.Read(id[:])
	whole := binary.BigEndian.AppendUint16(nil, uint16(ct))
	chunks, err := padding.Split(id, append(whole, payload...), size)
	if err != nil {
		t.Fatal(err)
	}
	return payload, chunks
}

func (s chunkSender) opened(ch []byte) *sealed.Opened {
	return &sealed.Opened{Sender: s.id, ContentType: sealed.ContentChunk, Content: ch}
}

func chunkSets(t *testing.T, c *Client) (sets, parts int) {
	t.Helper()
	err := c.store.View(func(tx *state.Tx) error {
		if err := tx.ForEach(bucketChunkSets, func(_, _ []byte) error { sets++; return nil }); err != nil {
			return err
		}
		return tx.ForEach(bucketChunkParts, func(_, _ []byte) error { parts++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return sets, parts
}

// TestChunksLinear: keeping a chunk costs the same whether it is the
// 10th or the 1,000th of its set. Before, every chunk re-encoded and
// re-encrypted the whole set kept so far: quadratic in the set's size, so
// a stranger's large incomplete set cost the receiver more with every
// envelope. Early and late chunks are timed in turn (one of a fresh set,
// then one of a set 890 chunks long), so that the machine's load, which
// changes over the run, weighs on both alike.
func TestChunksLinear(t *testing.T) {
	c := chunkClient(t)
	var mb wire.ID
	rand.Read(mb[:])
	carol := newChunkSender(t, "carol")
	payload, chunks := split(t, sealed.ContentMLSWelcome, 1000*(4<<10-padding.ChunkHeaderSize)-2, 4<<10)
	if len(chunks) < 1000 {
		t.Fatalf("%d chunks", len(chunks))
	}
	_, fresh := split(t, sealed.ContentMLSWelcome, 1000*(4<<10-padding.ChunkHeaderSize)-2, 4<<10)
	add := func(i int, ch []byte) (sealed.ContentType, []byte, []byte, time.Duration) {
		t.Helper()
		start := time.Now()
		ct, whole, k, err := c.addChunk(mb, carol.opened(ch))
		took := time.Since(start)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		return ct, whole, k, took
	}
	const long = 890
	for i, ch := range chunks[:long] {
		if _, whole, _, _ := add(i, ch); whole != nil {
			t.Fatalf("joined at chunk %d", i)
		}
	}
	var early, late []time.Duration
	for i := range 100 {
		_, w1, _, d1 := add(i, fresh[i])
		_, w2, _, d2 := add(long+i, chunks[long+i])
		if w1 != nil || w2 != nil {
			t.Fatalf("joined at chunk %d", i)
		}
		if i >= 10 { // the first few warm the fresh set's buckets
			early, late = append(early, d1), append(late, d2)
		}
	}
	var got []byte
	var key []byte
	for i := long + 100; i < len(chunks); i++ {
		ct, whole, k, _ := add(i, chunks[i])
		if whole != nil {
			if i != len(chunks)-1 || ct != sealed.ContentMLSWelcome {
				t.Fatalf("joined at chunk %d as type %d", i, ct)
			}
			got, key = whole, k
		}
	}
	if !slices.Equal(got, payload) {
		t.Fatal("joined payload differs")
	}
	var freshKey []byte
	for i := 100; i < len(fresh); i++ {
		if _, whole, k, _ := add(i, fresh[i]); whole != nil {
			freshKey = k
		}
	}
	if freshKey == nil {
		t.Fatal("the fresh set never joined")
	}
	if err := c.store.Update(func(tx *state.Tx) error { return dropChunkSet(tx, freshKey) }); err != nil {
		t.Fatal(err)
	}
	median := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	me, ml := median(early), median(late)
	t.Logf("%d chunks of %d bytes: median time per chunk %v for chunks 10-99 of a fresh set, %v for chunks %d-%d", len(chunks), len(chunks[0]), me, ml, long+10, long+99)
	if ml > 3*me+time.Millisecond {
		t.Errorf("a chunk late in the set took %v, early %v: not constant per chunk", ml, me)
	}
	if err := c.store.Update(func(tx *state.Tx) error { return dropChunkSet(tx, key) }); err != nil {
		t.Fatal(err)
	}
	if sets, parts := chunkSets(t, c); sets != 0 || parts != 0 {
		t.Fatalf("after the payload: %d sets, %d chunks kept", sets, parts)
	}
}

// TestChunkBounds: what incomplete sets hold is capped per sender (sets
// and bytes) and in total, and a flood of one-chunk sets from many
// accounts does not push out a set that is being completed.
func TestChunkBounds(t *testing.T) {
	c := chunkClient(t)
	var mb wire.ID
	rand.Read(mb[:])

	// One sender's incomplete sets: its oldest go.
	mallory := newChunkSender(t, "mallory")
	for range maxChunkSetsPerSender + 3 {
		_, chunks := split(t, sealed.ContentMLSWelcome, 3000, 1100)
		if _, whole, _, err := c.addChunk(mb, mallory.opened(chunks[0])); err != nil || whole != nil {
			t.Fatalf("incomplete set: %v", err)
		}
	}
	if sets, parts := chunkSets(t, c); sets != maxChunkSetsPerSender || parts != maxChunkSetsPerSender {
		t.Fatalf("one sender holds %d sets, %d chunks; bound %d", sets, parts, maxChunkSetsPerSender)
	}

	// A payload larger than a sender's share is refused, and what it
	// held is dropped.
	_, big := split(t, sealed.ContentMLSWelcome, maxChunkBytesPerSender+(1<<20), 1<<20)
	var err error
	eve := newChunkSender(t, "eve")
	for _, ch := range big {
		if _, _, _, err = c.addChunk(mb, eve.opened(ch)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("a payload beyond the per-sender bytes was kept")
	}

	// carol's chunks arrive among those of 3×maxChunkSets accounts that
	// each start a set and never add to it: hers completes, and no more
	// than maxChunkSets sets are kept at any time.
	carol := newChunkSender(t, "carol")
	payload, chunks := split(t, sealed.ContentMLSWelcome, 4000, 1100)
	if len(chunks) != 4 {
		t.Fatalf("%d chunks", len(chunks))
	}
	var whole []byte
	for i := range 3 * maxChunkSets {
		if i%(maxChunkSets-1) == 0 {
			k := i / (maxChunkSets - 1)
			_, w, _, err := c.addChunk(mb, carol.opened(chunks[k]))
			if err != nil {
				t.Fatalf("carol's chunk %d: %v", k, err)
			}
			if w != nil {
				whole = w
			}
		}
		_, junk := split(t, sealed.ContentMLSWelcome, 3000, 1100)
		if _, _, _, err := c.addChunk(mb, newChunkSender(t, fmt.Sprintf("sybil%d", i)).opened(junk[0])); err != nil {
			t.Fatalf("sybil %d: %v", i, err)
		}
		if sets, parts := chunkSets(t, c); sets > maxChunkSets || parts > 2*maxChunkSets {
			t.Fatalf("%d sets, %d chunks kept; bound %d sets", sets, parts, maxChunkSets)
		}
	}
	if !slices.Equal(whole, payload) {
		t.Fatal("carol's set did not complete among the flood")
	}
}
