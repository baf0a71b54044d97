package padding

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// lenPrefix is the size of the big-endian length in front of a padded
// payload (docs/protocol.md §3.2).
const lenPrefix = 4

// Overhead is what Pad adds before choosing a bucket.
const Overhead = lenPrefix

// Pad returns u32 length || data || zeros, exactly one bucket long. It is
// used on plaintexts before sealing, so that ciphertexts come in as few
// sizes as the policy has buckets.
func Pad(p Policy, data []byte) ([]byte, error) {
	size, err := p.Bucket(lenPrefix + len(data))
	if err != nil {
		return nil, fmt.Errorf("pad: %w", err)
	}
	out := make([]byte, size)
	binary.BigEndian.PutUint32(out, uint32(len(data)))
	copy(out[lenPrefix:], data)
	return out, nil
}

// Unpad reverses Pad. The input must be exactly a bucket of p, and the
// padding must be all zeros: anything else is ErrBadPad, so a peer cannot
// hide data in the padding. The returned slice aliases padded.
func Unpad(p Policy, padded []byte) ([]byte, error) {
	if !p.IsBucket(len(padded)) {
		return nil, fmt.Errorf("%w: %d bytes is not a bucket size", ErrBadPad, len(padded))
	}
	n := binary.BigEndian.Uint32(padded)
	if uint64(n) > uint64(len(padded)-lenPrefix) {
		return nil, fmt.Errorf("%w: length %d exceeds the bucket", ErrBadPad, n)
	}
	// Smallest bucket check: a payload padded to a larger bucket than
	// needed would make two encodings of one message.
	if want, _ := p.Bucket(lenPrefix + int(n)); want != len(padded) {
		return nil, fmt.Errorf("%w: padded to %d, want %d", ErrBadPad, len(padded), want)
	}
	if !allZero(padded[lenPrefix+int(n):]) {
		return nil, fmt.Errorf("%w: nonzero padding", ErrBadPad)
	}
	return padded[lenPrefix : lenPrefix+int(n)], nil
}

// allZero checks the padding in time independent of where a nonzero byte
// sits; the padding follows decrypted content.
func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return subtle.ConstantTimeByteEq(acc, 0) == 1
}
