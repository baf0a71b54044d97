package state

import (
	"bytes"
	"testing"
)

// FuzzOpenValue feeds random bytes to the decoders of stored values: they
// must return an error (or a value for a genuine ciphertext), never panic.
func FuzzOpenValue(f *testing.F) {
	k := &keys{}
	for i := range k.enc {
		k.enc[i], k.mac[i] = byte(i), byte(i+1)
	}
	db := k.bucketName("contacts")
	dk := k.entryKey(db, []byte("alice"))
	f.Add(k.seal(encodeKeyed([]byte("alice"), []byte("v")), entryAAD(db, dk)))
	f.Add(k.sealHeader(db, kindKeyed, "contacts"))
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, stored []byte) {
		if key, _, err := k.openKeyed(db, dk, stored); err == nil && !bytes.Equal(key, []byte("alice")) {
			t.Fatalf("opened to key %q", key)
		}
		k.open(stored, entryAAD(db, seqKey(1)))
		k.openHeader(db, stored)
		k.verifyCheck(nil, stored)
		// The plaintext decoder on its own, with random input.
		if key, value, err := decodeKeyed(stored); err == nil && 2+len(key)+len(value) != len(stored) {
			t.Fatalf("decodeKeyed lost bytes")
		}
	})
}

// FuzzDecodeParams feeds random bytes to the meta "params" decoder: it must
// not panic, and what it accepts must be within limits and re-encode exactly.
func FuzzDecodeParams(f *testing.F) {
	p := params{version: formatVersion, time: 3, memoryKiB: 65536, threads: 4}
	f.Add(p.encode())
	p.memoryKiB = 0xffffffff
	f.Add(p.encode())
	f.Add([]byte{0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeParams(b)
		if err != nil {
			return
		}
		if checkKDF(p.time, p.memoryKiB, p.threads) != nil {
			t.Fatalf("accepted out-of-range params %+v", p)
		}
		if !bytes.Equal(p.encode(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// BenchmarkOpen measures Open with the default Argon2id cost.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	s, err := Create(dir, pass, nil)
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	b.ResetTimer()
	for b.Loop() {
		s, err := Open(dir, pass, nil)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
