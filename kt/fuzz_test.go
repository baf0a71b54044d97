package kt

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// seedProofs returns real encoded proofs from a small directory.
func seedProofs(f *testing.F) (lookup, history, consistency, record, checkpoint []byte, d *testDir) {
	d = newTestDir(f)
	d.publish(f, "alice", []byte("a1"))
	d.publish(f, "alice", []byte("a2"), []byte("a3"))
	lp, err := d.Lookup(context.Background(), "alice", 1)
	if err != nil {
		f.Fatal(err)
	}
	hp, err := d.History(context.Background(), "alice", 0, 0)
	if err != nil {
		f.Fatal(err)
	}
	cp, err := d.Consistency(context.Background(), 1)
	if err != nil {
		f.Fatal(err)
	}
	return lp.Marshal(), hp.Marshal(), cp.Marshal(), lp.Epoch.Record, lp.Epoch.Checkpoint, d
}

func FuzzParseLookupProof(f *testing.F) {
	l, _, _, _, _, d := seedProofs(f)
	f.Add(l)
	v := d.verifier(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParseLookupProof(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Marshal(), raw) {
			t.Fatal("re-encoding differs")
		}
		v.VerifyLookup("alice", p) // must not panic
	})
}

func FuzzParseHistoryProof(f *testing.F) {
	_, h, _, _, _, d := seedProofs(f)
	f.Add(h)
	v := d.verifier(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParseHistoryProof(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Marshal(), raw) {
			t.Fatal("re-encoding differs")
		}
		v.VerifyHistory("alice", 0, p)
	})
}

func FuzzParseConsistencyProof(f *testing.F) {
	_, _, c, _, _, d := seedProofs(f)
	f.Add(c)
	v := d.verifier(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParseConsistencyProof(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Marshal(), raw) {
			t.Fatal("re-encoding differs")
		}
		v.VerifyConsistency(p)
	})
}

func FuzzParseEpochRecord(f *testing.F) {
	f.Add((&EpochRecord{Epoch: 7, Timestamp: 99}).Marshal())
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseEpochRecord(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), raw) {
			t.Fatal("re-encoding differs")
		}
	})
}

func FuzzOpenCheckpoint(f *testing.F) {
	_, _, _, _, cp, d := seedProofs(f)
	f.Add(cp)
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := OpenCheckpoint(raw, d.opts.LogVerifier)
		if err != nil {
			return
		}
		if c.Origin != d.opts.LogVerifier.Name() {
			t.Fatal("accepted another origin")
		}
	})
}

func FuzzParseBinding(f *testing.F) {
	b := testBinding(f, "alice")
	f.Add(b.Marshal())
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ParseBinding(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(b.Marshal(), raw) {
			t.Fatal("re-encoding differs")
		}
		b.Verify("alice")
	})
}

func FuzzParseTokenEpochValue(f *testing.F) {
	f.Add(TokenEpochValue(time.Hour))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := ParseTokenEpochValue(raw)
		if err != nil {
			return
		}
		if d < time.Second || !bytes.Equal(TokenEpochValue(d), raw) {
			t.Fatalf("%x: %v, re-encoding differs", raw, d)
		}
	})
}

// FuzzParseWitnessPolicy: a witness policy (server file, or the part of a
// pin a user pastes) never panics, and its canonical text parses back to
// itself; Satisfied and Cosigners take any note.
func FuzzParseWitnessPolicy(f *testing.F) {
	const vk = "witness.test/a+0900e6d7+BFa7uSGLlM2d2crdBB2Of5T0uJ2GWpyfkkbxnUgdzUJr"
	f.Add("witness a " + vk + " http://127.0.0.1:1/\nquorum a\n")
	f.Add("# c\nlog x\nwitness a " + vk + "\ngroup g any a\nquorum g\n")
	f.Add("quorum none\n")
	f.Add("group g 2 a b\n")
	f.Fuzz(func(t *testing.T, text string) {
		p, err := ParseWitnessPolicy(text)
		if err != nil {
			return
		}
		again, err := ParseWitnessPolicy(p.Text())
		if err != nil || again.Text() != p.Text() {
			t.Fatalf("canonical text %q does not parse back: %v", p.Text(), err)
		}
		p.Satisfied([]byte(text))
		p.Cosigners([]byte(text))
	})
}

// FuzzNodeStore feeds the tree's bbolt keys and records (kt.db, which a
// stolen or swapped disk controls) to their decoders: no panic; a key
// accepted names a node whose storeKey decodes back to it; a record
// accepted encodes (without its previous state) to bytes that decode to
// the same state.
func FuzzNodeStore(f *testing.F) {
	deep := nodeID{depth: 40, prefix: Index{0xab, 0xcd, 0xef, 0x80}}
	var s nodeState
	s.present = [2]bool{true, true}
	s.child[0] = childRef{id: nodeID{depth: leafDepth, prefix: Index{1}}, hash: [32]byte{2}, commitment: [32]byte{3}}
	s.child[1] = childRef{id: deep, hash: [32]byte{4}}
	r := &nodeRecord{id: rootID, epoch: 7, state: s}
	f.Add(rootID.storeKey(), r.marshal())
	f.Add(deep.storeKey(), append(r.marshal(), r.marshal()...))
	f.Add(deep.key(), r.marshal()[:50])
	f.Add(deep.storeKey(), r.marshalV1())
	f.Add(deep.storeKey(), append(r.marshalV1(), r.marshalV1()...))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		id, err := nodeIDFromStoreKey(key)
		if err != nil {
			return
		}
		if back, err := nodeIDFromStoreKey(id.storeKey()); err != nil || back != id {
			t.Fatalf("store key of %d/%x decodes to %v, %v", id.depth, id.prefix[:4], back, err)
		}
		r, err := parseNodeRecord(id, value)
		if err != nil {
			return
		}
		r2, err := parseNodeRecord(id, r.marshal())
		if err != nil || r2.epoch != r.epoch || r2.state != r.state || r2.hasPrev {
			t.Fatalf("record re-encoded: %v", err)
		}
	})
}

func FuzzParseBatchLookupProof(f *testing.F) {
	_, _, _, _, _, d := seedProofs(f)
	p, err := d.LookupBatch(context.Background(), []string{"alice", "nobody"}, 0, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p.Marshal())
	v := d.verifier(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParseBatchLookupProof(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Marshal(), raw) {
			t.Fatal("re-encoding differs")
		}
		v.VerifyLookupBatch([]string{"alice", "nobody", "x", "y"}[:len(p.Lookups)], p) // must not panic
	})
}
