package kt

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

type memNodes map[nodeID]*nodeRecord

func (m memNodes) node(id nodeID) (*nodeRecord, error) { return m[id], nil }

func randIndex(r *rand.Rand) Index {
	var i Index
	for j := range i {
		i[j] = byte(r.UintN(256))
	}
	return i
}

// TestTreeProofs inserts random leaves over several epochs and checks that
// every membership and non-membership proof verifies against its epoch's
// root, and that a wrong commitment, a wrong root or a tampered proof fails.
func TestTreeProofs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	m := memNodes{}
	leaves := map[Index][32]byte{}
	roots := map[uint64][32]byte{}
	added := map[Index]uint64{}
	for e := uint64(1); e <= 12; e++ {
		tb := newTreeBatch(m, e)
		n := 1 + r.IntN(60)
		for range n {
			idx, c := randIndex(r), randIndex(r)
			if e == 3 {
				// Force long shared prefixes.
				copy(idx[:20], bytes.Repeat([]byte{0xab}, 20))
			}
			if err := tb.Insert(idx, c); err != nil {
				t.Fatal(err)
			}
			leaves[idx], added[idx] = c, e
		}
		root, err := tb.Finish()
		if err != nil {
			t.Fatal(err)
		}
		for id, rec := range tb.dirty {
			m[id] = rec
		}
		roots[e] = root
		// Proofs at this epoch and the previous one (both states kept).
		for _, at := range []uint64{e - 1, e} {
			if at == 0 {
				continue
			}
			checkEpoch(t, m, at, roots[at], leaves, added, r)
		}
	}
	// Inserting an index twice is refused.
	for idx, c := range leaves {
		if err := newTreeBatch(m, 13).Insert(idx, c); err != ErrDuplicateIndex {
			t.Fatalf("duplicate insert: %v", err)
		}
		break
	}
}

func checkEpoch(t *testing.T, m memNodes, e uint64, root [32]byte, leaves map[Index][32]byte, added map[Index]uint64, r *rand.Rand) {
	t.Helper()
	var wrongRoot = root
	wrongRoot[0] ^= 1
	for idx, c := range leaves {
		p, err := proveIndex(m, e, idx)
		if err != nil {
			t.Fatal(err)
		}
		if added[idx] > e {
			if err := p.VerifyAbsence(root, idx); err != nil {
				t.Fatalf("epoch %d: future leaf not absent: %v", e, err)
			}
			continue
		}
		if err := p.VerifyMembership(root, idx, c); err != nil {
			t.Fatalf("epoch %d: membership: %v", e, err)
		}
		bad := c
		bad[5] ^= 0x10
		if p.VerifyMembership(root, idx, bad) == nil {
			t.Fatal("membership verified for a wrong commitment")
		}
		if p.VerifyMembership(wrongRoot, idx, c) == nil {
			t.Fatal("membership verified against a wrong root")
		}
		if p.VerifyAbsence(root, idx) == nil {
			t.Fatal("present index proved absent")
		}
		// Round trip through the encoding.
		var b cryptobyte.Builder
		p.Marshal(&b)
		q, err := ParseMapProof(b.BytesOrPanic())
		if err != nil || q.VerifyMembership(root, idx, c) != nil {
			t.Fatalf("decoded proof: %v", err)
		}
		// A tampered sibling breaks the proof.
		if len(p.Steps) > 0 {
			p.Steps[len(p.Steps)/2].Sibling[0] ^= 1
			if p.VerifyMembership(root, idx, c) == nil {
				t.Fatal("tampered proof verified")
			}
		}
	}
	for range 200 {
		idx := randIndex(r)
		if _, ok := leaves[idx]; ok {
			continue
		}
		p, err := proveIndex(m, e, idx)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.VerifyAbsence(root, idx); err != nil {
			t.Fatalf("epoch %d: absence: %v", e, err)
		}
		if p.VerifyAbsence(wrongRoot, idx) == nil {
			t.Fatal("absence verified against a wrong root")
		}
		if _, err := p.VerifyPresence(root, idx); err == nil {
			t.Fatal("absent index proved present")
		}
	}
}

func TestEmptyTree(t *testing.T) {
	m := memNodes{}
	idx := randIndex(rand.New(rand.NewPCG(3, 4)))
	p, err := proveIndex(m, 0, idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.VerifyAbsence(emptyRoot(), idx); err != nil {
		t.Fatal(err)
	}
	// A single leaf: a neighbour's proof ends in the root's empty child or the leaf.
	tb := newTreeBatch(m, 1)
	var c [32]byte
	if err := tb.Insert(idx, c); err != nil {
		t.Fatal(err)
	}
	root, _ := tb.Finish()
	for id, rec := range tb.dirty {
		m[id] = rec
	}
	other := idx
	other[0] ^= 0x80
	p, _ = proveIndex(m, 1, other)
	if p.Terminal.Kind != TerminalEmpty || p.VerifyAbsence(root, other) != nil {
		t.Fatalf("absence beside a single leaf: %+v", p.Terminal)
	}
	other = idx
	other[31] ^= 1
	p, _ = proveIndex(m, 1, other)
	if p.Terminal.Kind != TerminalLeaf || p.VerifyAbsence(root, other) != nil {
		t.Fatalf("absence at a neighbouring leaf: %+v", p.Terminal)
	}
}

func TestLadderMeetsAbsentSet(t *testing.T) {
	for k := uint32(0); k < 300; k++ {
		abs := map[uint32]bool{}
		for _, v := range absentSet(k) {
			if v <= k {
				t.Fatalf("absentSet(%d) holds %d", k, v)
			}
			abs[v] = true
		}
		if !abs[k+1] {
			t.Fatalf("absentSet(%d) lacks %d", k, k+1)
		}
		for k2 := k + 1; k2 < 600; k2++ {
			met := false
			for _, v := range ladder(k2) {
				if v > k2 {
					t.Fatalf("ladder(%d) holds %d", k2, v)
				}
				met = met || abs[v]
			}
			if !met {
				t.Fatalf("ladder(%d) misses absentSet(%d)", k2, k)
			}
		}
		if l := ladder(k); k > 0 && l[len(l)-1] != k {
			t.Fatalf("ladder(%d) does not end at %d", k, k)
		}
	}
}

func FuzzParseMapProof(f *testing.F) {
	m := memNodes{}
	r := rand.New(rand.NewPCG(5, 6))
	tb := newTreeBatch(m, 1)
	var idxs []Index
	for range 20 {
		idx := randIndex(r)
		idxs = append(idxs, idx)
		tb.Insert(idx, idx)
	}
	root, _ := tb.Finish()
	for id, rec := range tb.dirty {
		m[id] = rec
	}
	for _, idx := range append(idxs[:3], randIndex(r)) {
		p, _ := proveIndex(m, 1, idx)
		var b cryptobyte.Builder
		p.Marshal(&b)
		f.Add(b.BytesOrPanic())
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParseMapProof(raw)
		if err != nil {
			return
		}
		got, present, c, err := p.Evaluate(idxs[0])
		if err == nil && got == root && present && c != idxs[0] {
			t.Fatal("a decoded proof shows another commitment at a present index")
		}
		var b cryptobyte.Builder
		p.Marshal(&b)
		if !bytes.Equal(b.BytesOrPanic(), raw) {
			t.Fatal("re-encoding differs")
		}
	})
}
