package witness_test

import (
	"encoding/base64"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/quicprochat/qpc/kt/witness"
)

// fuzzLogKey signs the checkpoints of memLog in fuzz seeds and benchmarks
// (a fixed key, so seeds stay valid across runs).
const (
	fuzzLogSKey = "PRIVATE+KEY+witness.test/fuzzlog+679e904a+AcCnTA1hHrX3f3UnPzYf9n2ZseC0ns9ntzMqieCpftxu"
	fuzzLogVKey = "witness.test/fuzzlog+679e904a+AWxoBXNkp818dD79o28n2f7lad8rHDIWFugI0k7KKce6"
)

// memLog is an RFC 6962 log in memory (sumdb/tlog hashing), for requests
// in numbers a real directory would take minutes to make.
type memLog struct {
	hashes []tlog.Hash
	n      int64
	signer note.Signer
}

func newMemLog(t testing.TB) (*memLog, witness.Log) {
	t.Helper()
	s, err := note.NewSigner(fuzzLogSKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := witness.LogFromVKey(fuzzLogVKey)
	if err != nil {
		t.Fatal(err)
	}
	return &memLog{signer: s}, l
}

func (m *memLog) reader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = m.hashes[x]
		}
		return out, nil
	})
}

func (m *memLog) append(t testing.TB, data []byte) {
	h, err := tlog.StoredHashes(m.n, data, m.reader())
	if err != nil {
		t.Fatal(err)
	}
	m.hashes = append(m.hashes, h...)
	m.n++
}

// request is the add-checkpoint body for the current size, from old.
func (m *memLog) request(t testing.TB, old int64) []byte {
	t.Helper()
	root, err := tlog.TreeHash(m.n, m.reader())
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("witness.test/fuzzlog\n%d\n%s\n", m.n, base64.StdEncoding.EncodeToString(root[:]))
	cp, err := note.Sign(&note.Note{Text: text}, m.signer)
	if err != nil {
		t.Fatal(err)
	}
	r := &witness.Request{OldSize: uint64(old), Checkpoint: cp}
	if old > 0 && old < m.n {
		p, err := tlog.ProveTree(m.n, old, m.reader())
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range p {
			r.Proof = append(r.Proof, h[:])
		}
	}
	return r.Marshal()
}
