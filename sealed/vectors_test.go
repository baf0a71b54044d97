package sealed

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
)

var updateVectors = flag.Bool("update-vectors", false, "rewrite sealed/testdata from the test cases")

// A vector file is "key: value" lines (values hex unless noted), '#'
// comments. good_* files carry everything needed to re-seal the envelope
// byte for byte and what Open must return; fail_* files carry the error
// code Open must return.
//
//	recipient_seed  X-Wing seed of the recipient mailbox key (32 bytes)
//	mailbox         mailbox send ID (32 bytes)
//	now             recipient clock, Unix seconds (decimal)
//	self            recipient's own identity key, or "-"
//	envelope        the envelope
//	want            "ok" or an error code name (VERSION, SUITE, ...)
//	sender_seed     good only: Ed25519 seed of the sender identity
//	enc_seed        good only: the 64 bytes of X-Wing encapsulation randomness
//	handle          good only: sender handle (hex of the UTF-8)
//	timestamp       good only: Unix seconds (decimal)
//	content_type    good only: decimal
//	content         good only
type vector map[string]string

// maxVectorEnvelope keeps testdata small: the one fail case above it
// (an envelope over the largest bucket) is only in TestOpenRejects.
const maxVectorEnvelope = 64 << 10

func fileFailCases(t testing.TB) int {
	n := 0
	for _, c := range failCases(t) {
		if len(c.envelope) <= maxVectorEnvelope {
			n++
		}
	}
	return n
}

type goodCase struct {
	name, handle string
	ct           ContentType
	content      []byte
	bucket       int
}

var goodCases = []goodCase{
	{"hello", "alice", ContentMLS, []byte("hello"), 512},
	{"empty_content", "a", ContentCheckpoint, nil, 512},
	{"utf8_handle_64_bytes", strings.Repeat("é", 32), ContentMLSWelcome, []byte("welcome"), 512},
	{"bucket_2k", "carol", ContentMLS, bytes.Repeat([]byte{0xa5}, 1000), 2048},
	{"bucket_16k", "bob", ContentChunk, bytes.Repeat([]byte{0x5a}, 3000), 16384},
}

func encSeed(name string) []byte {
	b := make([]byte, 64)
	(&detRand{label: "vector " + name}).Read(b)
	return b
}

func writeVectors(t *testing.T) {
	dir := "testdata"
	old, _ := filepath.Glob(filepath.Join(dir, "*_*.hex"))
	for _, f := range old {
		os.Remove(f)
	}
	rk := testRecipient(t)
	common := func(v vector, envelope []byte, now time.Time, self ed25519.PublicKey) {
		v["recipient_seed"] = hex.EncodeToString(seed("recipient"))
		v["mailbox"] = hex.EncodeToString(testMailbox[:])
		v["now"] = strconv.FormatInt(now.Unix(), 10)
		v["self"] = "-"
		if self != nil {
			v["self"] = hex.EncodeToString(self)
		}
		v["envelope"] = hex.EncodeToString(envelope)
	}
	for _, g := range goodCases {
		sender := testSender("sender "+g.name, g.handle)
		es := encSeed(g.name)
		env, err := seal(bytes.NewReader(es), padding.V1, rk.Public(), testMailbox, sender, g.ct, g.content, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if len(env) != g.bucket+Overhead {
			t.Fatalf("%s: envelope of %d bytes, want %d", g.name, len(env), g.bucket+Overhead)
		}
		v := vector{"want": "ok", "sender_seed": hex.EncodeToString(sender.Key.Seed()), "enc_seed": hex.EncodeToString(es),
			"handle": hex.EncodeToString([]byte(g.handle)), "timestamp": strconv.FormatInt(testNow.Unix(), 10),
			"content_type": strconv.Itoa(int(g.ct)), "content": hex.EncodeToString(g.content)}
		common(v, env, testNow.Add(90*time.Minute), nil)
		writeVector(t, filepath.Join(dir, "good_"+g.name+".hex"), fmt.Sprintf("%d-byte bucket, envelope %d bytes", g.bucket, len(env)), v)
	}
	for _, c := range failCases(t) {
		if len(c.envelope) > maxVectorEnvelope {
			continue // TestOpenRejects covers it; not worth megabytes of hex
		}
		v := vector{"want": c.want.Code.String()}
		common(v, c.envelope, c.now, c.self)
		writeVector(t, filepath.Join(dir, "fail_"+c.name+".hex"), "Open must fail with "+c.want.Code.String(), v)
	}
}

func writeVector(t *testing.T, path, comment string, v vector) {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: %s\n", strings.TrimSuffix(filepath.Base(path), ".hex"), comment)
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, v[k])
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readVector(t *testing.T, path string) vector {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := vector{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, ok := strings.Cut(line, ": ")
		if !ok {
			k, val = strings.TrimSuffix(line, ":"), ""
		}
		v[k] = val
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v vector) hex(t *testing.T, k string) []byte {
	b, err := hex.DecodeString(v[k])
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return b
}

func (v vector) int(t *testing.T, k string) int64 {
	n, err := strconv.ParseInt(v[k], 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return n
}

func TestVectors(t *testing.T) {
	if *updateVectors {
		writeVectors(t)
	}
	files, _ := filepath.Glob("testdata/*_*.hex")
	var good, fail int
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".hex")
		t.Run(name, func(t *testing.T) {
			v := readVector(t, path)
			rk, err := NewMailboxKey(v.hex(t, "recipient_seed"))
			if err != nil {
				t.Fatal(err)
			}
			var mbox wire.ID
			copy(mbox[:], v.hex(t, "mailbox"))
			var self ed25519.PublicKey
			if v["self"] != "-" {
				self = v.hex(t, "self")
			}
			now := time.Unix(v.int(t, "now"), 0)
			env := v.hex(t, "envelope")
			o, err := Open(rk, mbox, env, now, 0, self)
			switch {
			case strings.HasPrefix(name, "good_"):
				good++
				if v["want"] != "ok" || err != nil {
					t.Fatalf("Open = %v, vector wants %s", err, v["want"])
				}
				sender := SenderIdentity{Key: ed25519.NewKeyFromSeed(v.hex(t, "sender_seed")), Handle: string(v.hex(t, "handle"))}
				ts := time.Unix(v.int(t, "timestamp"), 0)
				ct := ContentType(v.int(t, "content_type"))
				content := v.hex(t, "content")
				if !o.Sender.IdentityKey.Equal(sender.Key.Public()) || o.Sender.Handle != sender.Handle ||
					!o.Timestamp.Equal(ts) || o.ContentType != ct || !bytes.Equal(o.Content, content) {
					t.Fatalf("Open = %+v", o)
				}
				// The format is deterministic given the encapsulation randomness:
				// re-sealing must give the same bytes.
				again, err := seal(bytes.NewReader(v.hex(t, "enc_seed")), padding.V1, rk.Public(), mbox, sender, ct, content, ts)
				if err != nil || !bytes.Equal(again, env) {
					t.Fatalf("re-seal differs from the vector (%v)", err)
				}
			case strings.HasPrefix(name, "fail_"):
				fail++
				if err == nil || CodeOf(err).String() != v["want"] {
					t.Fatalf("Open = %v, want %s", err, v["want"])
				}
			default:
				t.Fatalf("vector file %s is neither good_ nor fail_", name)
			}
		})
	}
	if good != len(goodCases) || fail != fileFailCases(t) {
		t.Fatalf("testdata has %d good and %d fail vectors, want %d and %d (run with -update-vectors)", good, fail, len(goodCases), fileFailCases(t))
	}
}

func FuzzOpen(f *testing.F) {
	files, _ := filepath.Glob("testdata/*_*.hex")
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if h, ok := strings.CutPrefix(line, "envelope: "); ok {
				env, _ := hex.DecodeString(h)
				if len(env) <= maxVectorEnvelope {
					f.Add(env)
				}
			}
		}
	}
	f.Add([]byte{Version, 0x64, 0x7a, 0, 1, 0, 3})
	rk := testRecipient(f)
	f.Fuzz(func(t *testing.T, env []byte) {
		o, err := Open(rk, testMailbox, env, testNow, 0, nil)
		if (o == nil) == (err == nil) {
			t.Fatalf("Open = %v, %v", o, err)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == 0 {
				t.Fatalf("untyped error %v", err)
			}
		}
	})
}
