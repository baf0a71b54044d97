package padding

import (
	"encoding/binary"
	"fmt"
)

// ChunkHeaderSize is the size of the header in front of every chunk:
// payload ID (8) | index u16 | count u16 | total length u32
// (docs/protocol.md §3.3).
const ChunkHeaderSize = 16

// ChunkIDSize is the size of the payload ID that groups a payload's chunks.
const ChunkIDSize = 8

// ChunkID names one chunked payload, so that the chunks of several
// payloads in flight at once can be told apart. Choose it at random.
type ChunkID [ChunkIDSize]byte

// MaxChunks bounds how many chunks one payload may be split into.
const MaxChunks = 1 << 10

// Split cuts payload into chunks of at most chunkSize bytes each,
// header included, so that each chunk fits one envelope bucket. Every
// chunk carries id.
func Split(id ChunkID, payload []byte, chunkSize int) ([][]byte, error) {
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
		copy(c, id[:])
		binary.BigEndian.PutUint16(c[8:], uint16(i))
		binary.BigEndian.PutUint16(c[10:], uint16(count))
		binary.BigEndian.PutUint32(c[12:], uint32(len(payload)))
		copy(c[ChunkHeaderSize:], part)
		chunks[i] = c
	}
	return chunks, nil
}

// ChunkIDOf returns the payload ID of a chunk, for grouping chunks as they
// arrive.
func ChunkIDOf(chunk []byte) (ChunkID, error) {
	var id ChunkID
	if len(chunk) < ChunkHeaderSize {
		return id, fmt.Errorf("%w: short chunk", ErrBadPad)
	}
	copy(id[:], chunk)
	return id, nil
}

// Join reassembles the chunks of one payload, in any order. Every chunk
// must carry the same payload ID, agree on count and total length, each
// index must appear once, and the pieces must add up to the total.
func Join(chunks [][]byte) ([]byte, error) {
	if len(chunks) == 0 || len(chunks) > MaxChunks {
		return nil, fmt.Errorf("%w: %d chunks", ErrBadPad, len(chunks))
	}
	parts := make([][]byte, len(chunks))
	var total uint32
	var id ChunkID
	sum := 0
	for n, c := range chunks {
		if len(c) < ChunkHeaderSize {
			return nil, fmt.Errorf("%w: short chunk", ErrBadPad)
		}
		idx, cnt := int(binary.BigEndian.Uint16(c[8:])), int(binary.BigEndian.Uint16(c[10:]))
		tot := binary.BigEndian.Uint32(c[12:])
		if n == 0 {
			total = tot
			copy(id[:], c)
		}
		if ChunkID(c[:ChunkIDSize]) != id {
			return nil, fmt.Errorf("%w: chunks of two payloads", ErrBadPad)
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
