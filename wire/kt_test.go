package wire

import (
	"reflect"
	"testing"
)

func ktSamples() []Message {
	var s [SessionSize]byte
	s[3] = 9
	return []Message{
		&KTPublish{Session: s, Label: "alice", Value: []byte("binding")},
		&KTLookup{Label: "bob", KnownSize: 42},
		&KTHistory{Session: s, Label: "alice", Since: 7, KnownSize: 9},
		&KTConsistency{Old: 12},
		&KTCheckpoint{},
		&KTTile{Path: "tile/0/000.p/3"},
		&KTLookupBatch{Labels: []string{"bob", "carol"}, KnownSize: 7},
		&KTTileData{Data: []byte("tile")},
		&KTPublished{Version: 3, Epoch: 99},
		&KTProof{Proof: []byte("proof bytes")},
	}
}

func TestKTRoundTrip(t *testing.T) {
	for _, m := range ktSamples() {
		body, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(m.Kind(), body)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%T: %+v, want %+v", m, got, m)
		}
		wantReq := m.Kind() < KindKTPublished
		if IsRequest(m.Kind()) != wantReq {
			t.Fatalf("%T: IsRequest %v", m, !wantReq)
		}
	}
	// A batch of no labels, or of more than MaxKTBatch, is malformed.
	for _, n := range []int{0, MaxKTBatch + 1} {
		body, _ := Encode(&KTLookupBatch{Labels: make([]string, n)})
		if _, err := Decode(KindKTLookupBatch, body); err == nil {
			t.Fatalf("batch of %d labels accepted", n)
		}
	}
	// An empty label is malformed.
	body, _ := Encode(&KTLookup{})
	if _, err := Decode(KindKTLookup, body); err == nil {
		t.Fatal("empty label accepted")
	}
}

func fuzzKT(f *testing.F, kind Kind) {
	for _, m := range ktSamples() {
		if m.Kind() == kind {
			body, _ := Encode(m)
			f.Add(body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(kind, body)
		if err != nil {
			if _, ok := CodeOf(err); !ok {
				t.Fatalf("error without code: %v", err)
			}
			return
		}
		if again, err := Encode(m); err != nil || string(again) != string(body) {
			t.Fatal("accepted body does not round-trip")
		}
	})
}

func FuzzKTPublish(f *testing.F)     { fuzzKT(f, KindKTPublish) }
func FuzzKTLookup(f *testing.F)      { fuzzKT(f, KindKTLookup) }
func FuzzKTHistory(f *testing.F)     { fuzzKT(f, KindKTHistory) }
func FuzzKTConsistency(f *testing.F) { fuzzKT(f, KindKTConsistency) }
func FuzzKTPublished(f *testing.F)   { fuzzKT(f, KindKTPublished) }
func FuzzKTProof(f *testing.F)       { fuzzKT(f, KindKTProof) }
func FuzzKTTile(f *testing.F)        { fuzzKT(f, KindKTTile) }
func FuzzKTTileData(f *testing.F)    { fuzzKT(f, KindKTTileData) }
func FuzzKTLookupBatch(f *testing.F) { fuzzKT(f, KindKTLookupBatch) }
