package padding

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestNewPolicy(t *testing.T) {
	good := [][]int{{512}, {512, 2048, 16384, 131072}, {600, 1 << 20}}
	for _, sizes := range good {
		if _, err := NewPolicy(sizes...); err != nil {
			t.Errorf("NewPolicy(%v) = %v, want ok", sizes, err)
		}
	}
	bad := [][]int{nil, {511}, {512, 512}, {2048, 512}, {512, 1<<20 + 1}, {512, 600, 700, 800, 900, 1000, 1100, 1200, 1300}}
	for _, sizes := range bad {
		if _, err := NewPolicy(sizes...); !errors.Is(err, ErrBadPolicy) {
			t.Errorf("NewPolicy(%v) = %v, want ErrBadPolicy", sizes, err)
		}
	}
}

func TestBucket(t *testing.T) {
	cases := []struct{ n, want int }{{0, 512}, {512, 512}, {513, 2048}, {2048, 2048}, {2049, 16384}, {131072, 131072}}
	for _, c := range cases {
		got, err := V1.Bucket(c.n)
		if err != nil || got != c.want {
			t.Errorf("V1.Bucket(%d) = %d, %v; want %d", c.n, got, err, c.want)
		}
	}
	cases = []struct{ n, want int }{{0, 512}, {513, 2048}, {2048, 2048}, {2049, 4096}, {4096, 4096}, {4097, 16384}, {131072, 131072}}
	for _, c := range cases {
		got, err := V2.Bucket(c.n)
		if err != nil || got != c.want {
			t.Errorf("V2.Bucket(%d) = %d, %v; want %d", c.n, got, err, c.want)
		}
	}
	// V2 only adds a bucket: the control bucket, the smallest envelope
	// bucket and the largest (and so the largest envelope) are V1's.
	if !Default.Equal(V2) || V2.Max() != V1.Max() || V2.Buckets()[1] != V1.Buckets()[1] {
		t.Errorf("V2 %s does not extend V1 %s", V2, V1)
	}
	for _, b := range V1.Buckets() {
		if !V2.IsBucket(b) {
			t.Errorf("V2 lacks V1's bucket %d", b)
		}
	}
	if _, err := Default.Bucket(131073); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Bucket(max+1) = %v, want ErrTooLarge", err)
	}
	if !Default.IsBucket(2048) || Default.IsBucket(2047) {
		t.Error("IsBucket disagrees with the policy")
	}
}

func TestPadRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 508, 509, 2044, 2045, 100000, 131068} {
		data := bytes.Repeat([]byte{0xa5}, n)
		padded, err := Pad(Default, data)
		if err != nil {
			t.Fatalf("Pad(%d): %v", n, err)
		}
		if !Default.IsBucket(len(padded)) {
			t.Fatalf("Pad(%d) gave %d bytes, not a bucket", n, len(padded))
		}
		got, err := Unpad(Default, padded)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Unpad(Pad(%d)) = %d bytes, %v", n, len(got), err)
		}
	}
	if _, err := Pad(Default, make([]byte, 131069)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Pad(too large) = %v, want ErrTooLarge", err)
	}
}

// Bad padded payloads: each must fail with ErrBadPad.
func TestUnpadFail(t *testing.T) {
	valid, _ := Pad(Default, []byte("hello"))
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), valid...))
	}
	cases := map[string][]byte{
		"fail_not_bucket":      valid[:511],
		"fail_length_too_big":  mutate(func(b []byte) []byte { b[0] = 0xff; return b }),
		"fail_nonzero_padding": mutate(func(b []byte) []byte { b[len(b)-1] = 1; return b }),
		"fail_oversized_bucket": func() []byte {
			b := make([]byte, 2048) // 5 bytes fit in 512: 2048 is a second encoding
			b[3] = 5
			return b
		}(),
		"fail_empty": {},
	}
	for name, in := range cases {
		if _, err := Unpad(Default, in); !errors.Is(err, ErrBadPad) {
			t.Errorf("%s: Unpad = %v, want ErrBadPad", name, err)
		}
	}
}

func TestSplitJoin(t *testing.T) {
	for _, n := range []int{0, 1, 2040, 2041, 10000} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		chunks, err := Split(ChunkID{7}, payload, 2048)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			if len(c) > 2048 {
				t.Fatalf("chunk of %d bytes exceeds 2048", len(c))
			}
		}
		// Reverse order: Join must not depend on arrival order.
		for i, j := 0, len(chunks)-1; i < j; i, j = i+1, j-1 {
			chunks[i], chunks[j] = chunks[j], chunks[i]
		}
		got, err := Join(chunks)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("Join(Split(%d)) = %d bytes, %v", n, len(got), err)
		}
	}
}

func TestJoinFail(t *testing.T) {
	chunks, _ := Split(ChunkID{1}, make([]byte, 5000), 2048)
	other, _ := Split(ChunkID{2}, make([]byte, 5000), 2048)
	if _, err := Join([][]byte{chunks[0], other[1], chunks[2]}); !errors.Is(err, ErrBadPad) {
		t.Errorf("chunks of two payloads joined: %v", err)
	}
	if id, err := ChunkIDOf(other[2]); err != nil || id != (ChunkID{2}) {
		t.Errorf("ChunkIDOf = %v, %v", id, err)
	}
	dup := [][]byte{chunks[0], chunks[0], chunks[2]}
	if _, err := Join(dup); !errors.Is(err, ErrBadPad) {
		t.Errorf("duplicate index: %v", err)
	}
	if _, err := Join(chunks[:2]); !errors.Is(err, ErrBadPad) {
		t.Errorf("missing chunk: %v", err)
	}
	short := [][]byte{chunks[0], chunks[1], chunks[2][:100]}
	if _, err := Join(short); !errors.Is(err, ErrBadPad) {
		t.Errorf("truncated chunk: %v", err)
	}
	if _, err := Join(nil); !errors.Is(err, ErrBadPad) {
		t.Errorf("no chunks: %v", err)
	}
}

func FuzzUnpad(f *testing.F) {
	good, _ := Pad(Default, []byte("seed"))
	f.Add(good)
	f.Add(make([]byte, 512))
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Unpad(Default, in)
		if err != nil {
			return
		}
		again, err := Pad(Default, out)
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("accepted input does not round-trip")
		}
	})
}

func FuzzJoin(f *testing.F) {
	chunks, _ := Split(ChunkID{9}, []byte("a payload that spans chunks"), 24)
	f.Add(chunks[0], chunks[1], chunks[2])
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		out, err := Join([][]byte{a, b, c})
		if err == nil && len(out) > len(a)+len(b)+len(c) {
			t.Fatalf("joined more bytes than given")
		}
	})
}

// TestChunkExample is the example of docs/protocol.md §3.3, byte for byte.
func TestChunkExample(t *testing.T) {
	chunks, err := Split(ChunkID{1, 2, 3, 4, 5, 6, 7, 8}, []byte("hello, chunks"), 21)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"010203040506070800000003" + "0000000d" + "68656c6c6f",
		"010203040506070800010003" + "0000000d" + "2c20636875",
		"010203040506070800020003" + "0000000d" + "6e6b73",
	}
	if len(chunks) != len(want) {
		t.Fatalf("%d chunks, want %d", len(chunks), len(want))
	}
	for i, c := range chunks {
		if got := hex.EncodeToString(c); got != want[i] {
			t.Errorf("chunk %d = %s, want %s", i, got, want[i])
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for s, want := range map[string][]int{
		"512,2048,16384,131072":      V1.Buckets(),
		"512,2048,4096,16384,131072": V2.Buckets(),
		"512":                        {512},
		" 1024 , 8192 ":              {1024, 8192},
	} {
		p, err := ParsePolicy(s)
		if err != nil || !slices.Equal(p.Buckets(), want) {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", s, p, err, want)
		}
		q, err := ParsePolicy(p.String())
		if err != nil || !q.Equal(p) {
			t.Errorf("%q does not round-trip through String: %v", s, err)
		}
	}
	for _, s := range []string{"", ",", "512,", "512;2048", "-512", "+512", "0x200", "511", "2048,512", "512,512",
		"512,600,700,800,900,1000,1100,1200,1300", "512,99999999999", "1048577"} {
		if _, err := ParsePolicy(s); !errors.Is(err, ErrBadPolicy) {
			t.Errorf("ParsePolicy(%q) = %v, want ErrBadPolicy", s, err)
		}
	}
	// The text encoding is the pinned form in JSON; "" is the zero Policy.
	raw, err := json.Marshal(struct{ P Policy }{V1})
	if err != nil || string(raw) != `{"P":"512,2048,16384,131072"}` {
		t.Fatalf("json: %s %v", raw, err)
	}
	var back struct{ P Policy }
	if err := json.Unmarshal(raw, &back); err != nil || !back.P.Equal(V1) {
		t.Fatalf("json back: %v %v", back.P, err)
	}
	if err := json.Unmarshal([]byte(`{"P":""}`), &back); err != nil || !back.P.IsZero() {
		t.Fatalf("empty: %v %v", back.P, err)
	}
	if err := json.Unmarshal([]byte(`{"P":"511"}`), &back); !errors.Is(err, ErrBadPolicy) {
		t.Fatalf("bad policy in JSON: %v", err)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add(Default.String())
	f.Add("512")
	f.Add(" 1024 , 8192 ")
	f.Add("512,512")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePolicy(s)
		if err != nil {
			return
		}
		if _, err := NewPolicy(p.Buckets()...); err != nil {
			t.Fatalf("accepted an invalid policy %v: %v", p, err)
		}
		q, err := ParsePolicy(p.String())
		if err != nil || !q.Equal(p) {
			t.Fatalf("%q does not round-trip: %v", s, err)
		}
	})
}
