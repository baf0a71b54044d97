package bench

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"slices"
	"sync"
	"time"
)

// Envelope layout (all big-endian), then filler up to the envelope size:
//
//	magic u32 | crc32 u32 | run u64 | seq u64 | sent ns u64 | filler
//
// The CRC (Castagnoli, hardware-accelerated) covers everything after
// itself, so a receiver detects an envelope the server truncated, mixed up
// or corrupted, not only a lost one. run separates this invocation's
// messages from anything else in the mailbox.
const (
	envMagic      = 0x71706362 // "qpcb"
	envHeaderSize = 4 + 4 + 8 + 8 + 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errEnvShort   = errors.New("bench: envelope shorter than its header")
	errEnvMagic   = errors.New("bench: envelope is not a bench message")
	errEnvCRC     = errors.New("bench: envelope checksum mismatch")
	errEnvForeign = errors.New("bench: envelope from another run")
)

// stampEnvelope writes the header into env (whose filler the caller set
// once) for message seq sent at offset sent from the run's base time.
func stampEnvelope(env []byte, run, seq uint64, sent time.Duration) {
	binary.BigEndian.PutUint32(env[0:], envMagic)
	binary.BigEndian.PutUint64(env[8:], run)
	binary.BigEndian.PutUint64(env[16:], seq)
	binary.BigEndian.PutUint64(env[24:], uint64(sent))
	binary.BigEndian.PutUint32(env[4:], crc32.Checksum(env[8:], castagnoli))
}

// parseEnvelope checks env and returns its sequence number and send time.
func parseEnvelope(env []byte, run uint64) (seq uint64, sent time.Duration, err error) {
	if len(env) < envHeaderSize {
		return 0, 0, errEnvShort
	}
	if binary.BigEndian.Uint32(env[0:]) != envMagic {
		return 0, 0, errEnvMagic
	}
	if binary.BigEndian.Uint32(env[4:]) != crc32.Checksum(env[8:], castagnoli) {
		return 0, 0, errEnvCRC
	}
	if binary.BigEndian.Uint64(env[8:]) != run {
		return 0, 0, errEnvForeign
	}
	return binary.BigEndian.Uint64(env[16:]), time.Duration(binary.BigEndian.Uint64(env[24:])), nil
}

// tracker records, per sequence number, whether the send was acknowledged
// and how often the message was delivered. Sequence numbers are dense
// (handed out by one counter from 1), so a slice indexed by them is both
// the cheapest map and a complete list for the final accounting.
type tracker struct {
	mu        sync.Mutex
	acked     []bool
	delivered []uint16
	latencies []time.Duration // one per first delivery
	pending   int             // acked and not yet delivered
	corrupt   int             // deliveries that failed parseEnvelope
}

func (t *tracker) grow(seq uint64) {
	if n := int(seq) + 1; n > len(t.acked) {
		t.acked = append(t.acked, make([]bool, n-len(t.acked))...)
		t.delivered = append(t.delivered, make([]uint16, n-len(t.delivered))...)
	}
}

// ack records that the server acknowledged seq.
func (t *tracker) ack(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.grow(seq)
	if t.acked[seq] {
		return
	}
	t.acked[seq] = true
	if t.delivered[seq] == 0 {
		t.pending++
	}
}

// deliver records one delivery of seq after latency lat. Only the first
// delivery contributes a latency; later ones are duplicates.
func (t *tracker) deliver(seq uint64, lat time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.grow(seq)
	if t.delivered[seq] < math.MaxUint16 {
		t.delivered[seq]++
	}
	if t.delivered[seq] == 1 {
		t.latencies = append(t.latencies, lat)
		if t.acked[seq] {
			t.pending--
		}
	}
}

func (t *tracker) badDelivery() {
	t.mu.Lock()
	t.corrupt++
	t.mu.Unlock()
}

// outstanding is the number of acknowledged messages not delivered yet.
func (t *tracker) outstanding() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending
}

// tally is the final accounting of one phase.
type tally struct {
	acked            int // sends the server acknowledged
	lost             int // acknowledged, never delivered
	duplicates       int // extra deliveries of one message
	unackedDelivered int // delivered although the send reported an error
	corrupt          int
	latencies        []time.Duration // sorted
}

func (t *tracker) tally() tally {
	t.mu.Lock()
	defer t.mu.Unlock()
	var r tally
	for seq, a := range t.acked {
		d := int(t.delivered[seq])
		if a {
			r.acked++
			if d == 0 {
				r.lost++
			}
		} else if d > 0 {
			r.unackedDelivered++
		}
		if d > 1 {
			r.duplicates += d - 1
		}
	}
	r.corrupt = t.corrupt
	r.latencies = slices.Clone(t.latencies)
	slices.Sort(r.latencies)
	return r
}

// percentile is the nearest-rank percentile p (0 < p <= 100) of sorted
// latencies, in milliseconds; 0 for none.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return float64(sorted[rank-1]) / float64(time.Millisecond)
}
