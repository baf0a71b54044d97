package padding

import (
	"encoding/binary"
	"fmt"
)

// ChunkHeaderSize is the size of the header in front of every chunk:
// index u16 | count u16 | total length u32 (docs/protocol.md §3.3).
const ChunkHeaderSize = 8

// MaxChunks bounds how many chunks one payload may be split into.
const MaxChunks = 1 << 10

// Split cuts payload into chunks of at most chunkSize bytes each,
// header included, so that each chunk fits one envelope bucket.
func Split(payload []byte, chunkSize int) ([][]byte, error) {
	room := chunkSize - ChunkHeaderSize
	if room <= 0 {
		return nil, fmt.Errorf("%w: chunk size %d leaves no room", ErrTooLarge, chunkSize)
	}
	count := (len(payload) + room - 1) / room
	if count == 0 {
		count = 1
	}
	if count > MaxChunks {
		return nil, fmt.Errorf("%w: %d bytes needs %d chunks, limit %d", ErrTooLarge, len(payload), count, MaxChunks)
	}
	chunks := make([][]byte, count)
	for i := range chunks {
		part := payload[min(i*room, len(payload)):min((i+1)*room, len(payload))]
		c := make([]byte, ChunkHeaderSize+len(part))
		binary.BigEndian.PutUint16(c[0:], uint16(i))
		binary.BigEndian.PutUint16(c[2:], uint16(count))
		binary.BigEndian.PutUint32(c[4:], uint32(len(payload)))
		copy(c[ChunkHeaderSize:], part)
		chunks[i] = c
	}
	return chunks, nil
}

// Join reassembles the chunks of one payload, in any order. Every chunk
// must agree on count and total length, each index must appear once, and
// the pieces must add up to the total.
func Join(chunks [][]byte) ([]byte, error) {
	if len(chunks) == 0 || len(chunks) > MaxChunks {
		return nil, fmt.Errorf("%w: %d chunks", ErrBadPad, len(chunks))
	}
	parts := make([][]byte, len(chunks))
	var total uint32
	sum := 0
	for n, c := range chunks {
		if len(c) < ChunkHeaderSize {
			return nil, fmt.Errorf("%w: short chunk", ErrBadPad)
		}
		idx, cnt := int(binary.BigEndian.Uint16(c)), int(binary.BigEndian.Uint16(c[2:]))
		tot := binary.BigEndian.Uint32(c[4:])
		if n == 0 {
			total = tot
		}
		if cnt != len(chunks) || tot != total || idx >= cnt || parts[idx] != nil {
			return nil, fmt.Errorf("%w: inconsistent chunk %d of %d", ErrBadPad, idx, cnt)
		}
		parts[idx] = c[ChunkHeaderSize:]
		sum += len(parts[idx])
	}
	if uint64(sum) != uint64(total) {
		return nil, fmt.Errorf("%w: chunks hold %d bytes, header says %d", ErrBadPad, sum, total)
	}
	out := make([]byte, 0, sum)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out, nil
}
