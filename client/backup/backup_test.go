package backup

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

var update = flag.Bool("update", false, "rewrite the testdata vectors")

// tiny keeps Argon2 cheap in tests: 1 pass, 1 lane, 8 KiB.
func tiny() *Options {
	return &Options{Argon2: Argon2{Passes: 1, Parallelism: 1, MemoryExp: 3}}
}

var pass = []byte("correct horse battery staple")

func payloadOf(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

func export(t testing.TB, payload []byte, opts *Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Export(&buf, payload, pass, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	// 300 KiB and 1 MiB span several 256 KiB AEAD chunks.
	for _, n := range []int{0, 1, 100, 256 << 10, 300 << 10, 1 << 20} {
		for _, armored := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/armor=%v", n, armored), func(t *testing.T) {
				opts := tiny()
				opts.Armor = armored
				want := payloadOf(n)
				msg := export(t, want, opts)
				if got := bytes.HasPrefix(msg, armorPrefix); got != armored {
					t.Fatalf("armored output: %v, want %v", got, armored)
				}
				got, err := Import(bytes.NewReader(msg), pass, tiny())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("payload differs (%d bytes, want %d)", len(got), len(want))
				}
			})
		}
	}
}

func TestArmorWithLeadingWhitespace(t *testing.T) {
	opts := tiny()
	opts.Armor = true
	msg := export(t, []byte("state"), opts)
	got, err := Import(io.MultiReader(strings.NewReader("\r\n \t\n"), bytes.NewReader(msg)), pass, nil)
	if err != nil || string(got) != "state" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestWrongPassphrase(t *testing.T) {
	for _, armored := range []bool{false, true} {
		opts := tiny()
		opts.Armor = armored
		msg := export(t, []byte("secret state"), opts)
		for _, wrong := range [][]byte{nil, []byte("correct horse battery stapl"), []byte("Correct horse battery staple")} {
			got, err := Import(bytes.NewReader(msg), wrong, nil)
			if !errors.Is(err, ErrPassphrase) || errors.Is(err, ErrCorrupt) || got != nil {
				t.Errorf("armor=%v passphrase %q: got %q, %v; want ErrPassphrase", armored, wrong, got, err)
			}
		}
	}
}

// skeskEnd returns the length of the SKESK packet at the start of msg.
func skeskEnd(t *testing.T, msg []byte) int {
	t.Helper()
	if msg[0] != 0xc3 || msg[1] >= 192 {
		t.Fatalf("unexpected SKESK header % x", msg[:2])
	}
	return 2 + int(msg[1])
}

// wantCorrupt checks that msg imports as ErrCorrupt (not ErrPassphrase),
// returning no bytes.
func wantCorrupt(t *testing.T, what string, msg []byte, opts *Options) {
	t.Helper()
	got, err := Import(bytes.NewReader(msg), pass, opts)
	if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrPassphrase) || got != nil {
		t.Errorf("%s: got %d bytes, %v; want ErrCorrupt and nothing", what, len(got), err)
	}
}

func TestTruncated(t *testing.T) {
	// Every cut point of a small backup, binary and armored.
	for _, armored := range []bool{false, true} {
		opts := tiny()
		opts.Armor = armored
		msg := export(t, []byte("a small state that fits in one chunk"), opts)
		for cut := 0; cut < len(msg); cut++ {
			if armored && cut >= len(msg)-len("\n-----END PGP MESSAGE-----\n") {
				// Only the armor's end line is missing: the packets are
				// whole, which the armor decoder accepts.
				continue
			}
			wantCorrupt(t, fmt.Sprintf("armor=%v cut at %d of %d", armored, cut, len(msg)), msg[:cut], nil)
		}
	}

	// A multi-chunk backup: cut around the chunk boundaries (256 KiB of
	// plaintext + 16-byte tag each), and the final tag.
	msg := export(t, payloadOf(600<<10), tiny())
	const chunk = 256<<10 + 16
	cuts := []int{skeskEnd(t, msg) + 1, skeskEnd(t, msg) + 40, len(msg) - 1, len(msg) - 16, len(msg) - 17, len(msg) / 2}
	for _, c := range []int{chunk, 2 * chunk} {
		for _, d := range []int{-20, -1, 0, 1, 20, 60} {
			cuts = append(cuts, skeskEnd(t, msg)+c+d)
		}
	}
	for _, cut := range cuts {
		wantCorrupt(t, fmt.Sprintf("cut at %d of %d", cut, len(msg)), msg[:cut], nil)
	}
}

func TestTrailingGarbage(t *testing.T) {
	msg := export(t, []byte("state"), tiny())
	wantCorrupt(t, "trailing byte", append(bytes.Clone(msg), 0), nil)
	wantCorrupt(t, "second message", append(bytes.Clone(msg), msg...), nil)
}

func TestBitFlips(t *testing.T) {
	msg := export(t, []byte("a state of some forty bytes, give or take"), tiny())
	end := skeskEnd(t, msg)
	// Flips in the Argon2 parameters may ask for more cost: keep it cheap.
	opts := &Options{MaxArgon2MemoryExp: 8, MaxArgon2Passes: 4}
	for i := range msg {
		for bit := range 8 {
			m := bytes.Clone(msg)
			m[i] ^= 1 << bit
			what := fmt.Sprintf("bit %d of byte %d/%d", bit, i, len(msg))
			if i >= end {
				// Anything in the encrypted data packet.
				wantCorrupt(t, what, m, opts)
				continue
			}
			// In the SKESK, damage to the salt, IV or sealed key cannot be
			// told from a wrong passphrase; anything else is corrupt or a
			// refused cost. Never success.
			got, err := Import(bytes.NewReader(m), pass, opts)
			if got != nil || !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrPassphrase) || errors.Is(err, ErrTooLarge)) {
				t.Errorf("%s: got %d bytes, %v", what, len(got), err)
			}
		}
	}
}

func TestTooLarge(t *testing.T) {
	var buf bytes.Buffer
	err := Export(&buf, make([]byte, 11), pass, &Options{Argon2: tiny().Argon2, MaxSize: 10})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("export over MaxSize: %v", err)
	}
	msg := export(t, make([]byte, 1000), tiny())
	if got, err := Import(bytes.NewReader(msg), pass, &Options{MaxSize: 999}); !errors.Is(err, ErrTooLarge) || got != nil {
		t.Errorf("import over MaxSize: %d bytes, %v", len(got), err)
	}
	if got, err := Import(bytes.NewReader(msg), pass, &Options{MaxSize: 1000}); err != nil || len(got) != 1000 {
		t.Errorf("import at MaxSize: %d bytes, %v", len(got), err)
	}

	// The Argon2 cost is refused before it is paid.
	opts := tiny()
	opts.Argon2.MemoryExp = 10
	msg = export(t, []byte("x"), opts)
	if _, err := Import(bytes.NewReader(msg), pass, &Options{MaxArgon2MemoryExp: 9}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("argon2 memory over the limit: %v", err)
	}
	opts = tiny()
	opts.Argon2.Passes = 5
	msg = export(t, []byte("x"), opts)
	if _, err := Import(bytes.NewReader(msg), pass, &Options{MaxArgon2Passes: 4}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("argon2 passes over the limit: %v", err)
	}
	if err := Export(io.Discard, []byte("x"), pass, &Options{Argon2: Argon2{MemoryExp: 22}}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("export over the default memory limit: %v", err)
	}
}

func TestExportRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		pass []byte
		a    Argon2
	}{
		{"empty passphrase", nil, tiny().Argon2},
		{"memory below 8*p KiB", pass, Argon2{Passes: 1, Parallelism: 2, MemoryExp: 3}},
		{"memory over 2^31 KiB", pass, Argon2{Passes: 1, Parallelism: 1, MemoryExp: 32}},
	} {
		if err := Export(io.Discard, []byte("x"), c.pass, &Options{Argon2: c.a, MaxArgon2MemoryExp: 32}); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func TestImportWithPrompt(t *testing.T) {
	msg := export(t, []byte("state"), tiny())
	prefix := []byte("ignored prefix")
	r := bytes.NewReader(append(bytes.Clone(prefix), msg...))

	// Right on the third try, reading from the position the reader was at.
	var asked []int
	r.Seek(int64(len(prefix)), io.SeekStart)
	got, err := ImportWithPrompt(r, func(attempt int) ([]byte, error) {
		asked = append(asked, attempt)
		if attempt == 3 {
			return pass, nil
		}
		return []byte("wrong"), nil
	}, 0, nil)
	if err != nil || string(got) != "state" || fmt.Sprint(asked) != "[1 2 3]" {
		t.Fatalf("got %q, %v after asking %v", got, err, asked)
	}

	// Never right: maxTries prompts, then ErrTooManyTries.
	for _, max := range []int{0, 1, 3} {
		asked = nil
		r.Seek(int64(len(prefix)), io.SeekStart)
		got, err = ImportWithPrompt(r, func(attempt int) ([]byte, error) {
			asked = append(asked, attempt)
			return []byte("wrong"), nil
		}, max, nil)
		want := max
		if want == 0 {
			want = DefaultMaxTries
		}
		if !errors.Is(err, ErrTooManyTries) || !errors.Is(err, ErrPassphrase) || got != nil || len(asked) != want {
			t.Errorf("maxTries %d: got %q, %v after %d prompts", max, got, err, len(asked))
		}
	}

	// A prompt error (the user gave up) ends it at once.
	stop := errors.New("cancelled")
	asked = nil
	r.Seek(int64(len(prefix)), io.SeekStart)
	_, err = ImportWithPrompt(r, func(attempt int) ([]byte, error) {
		asked = append(asked, attempt)
		return nil, stop
	}, 5, nil)
	if !errors.Is(err, stop) || len(asked) != 1 {
		t.Errorf("prompt error: %v after %d prompts", err, len(asked))
	}

	// A corrupt file is not retried.
	asked = nil
	_, err = ImportWithPrompt(bytes.NewReader(msg[:len(msg)-1]), func(attempt int) ([]byte, error) {
		asked = append(asked, attempt)
		return pass, nil
	}, 5, nil)
	if !errors.Is(err, ErrCorrupt) || len(asked) != 1 {
		t.Errorf("corrupt file: %v after %d prompts", err, len(asked))
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func TestReadErrorIsNotCorrupt(t *testing.T) {
	msg := export(t, []byte("state"), tiny())
	disk := errors.New("input/output error")
	_, err := Import(io.MultiReader(bytes.NewReader(msg[:50]), failingReader{disk}), pass, nil)
	if !errors.Is(err, disk) || errors.Is(err, ErrCorrupt) {
		t.Errorf("got %v, want the read error", err)
	}
}

// TestPacketShape parses the output with the library's packet reader: it
// must be a v6 SKESK with an Argon2 S2K carrying the requested parameters,
// then a v2 SEIPD with AES-256 and OCB. It fails if Export's config were
// ignored (the library's defaults are a v4 SKESK with an iterated-salted
// S2K and a v1 SEIPD).
func TestPacketShape(t *testing.T) {
	for _, c := range []struct {
		name string
		opts *Options
		want Argon2
	}{
		{"defaults", nil, Argon2{Passes: 3, Parallelism: 4, MemoryExp: 16}},
		{"tiny", tiny(), Argon2{Passes: 1, Parallelism: 1, MemoryExp: 3}},
		{"custom", &Options{Argon2: Argon2{Passes: 2, Parallelism: 3, MemoryExp: 9}, Armor: true}, Argon2{Passes: 2, Parallelism: 3, MemoryExp: 9}},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := export(t, []byte("state"), c.opts)
			if c.opts != nil && c.opts.Armor {
				msg = dearmor(t, msg)
			}

			// Raw packets: tags and the S2K specifier.
			raw := packet.NewOpaqueReader(bytes.NewReader(msg))
			op, err := raw.Next()
			if err != nil {
				t.Fatal(err)
			}
			if op.Tag != 3 {
				t.Fatalf("first packet tag %d, want 3 (SKESK)", op.Tag)
			}
			b := op.Contents
			if b[0] != 6 {
				t.Fatalf("SKESK version %d, want 6", b[0])
			}
			// version | count | cipher | mode | S2K length | S2K ...
			params, err := s2k.ParseIntoParams(bytes.NewReader(b[5 : 5+int(b[4])]))
			if err != nil {
				t.Fatal(err)
			}
			if params.Mode() != s2k.Argon2S2K {
				t.Fatalf("S2K mode %d, want %d (Argon2)", params.Mode(), s2k.Argon2S2K)
			}
			tpm := b[5+1+s2k.Argon2SaltSize : 5+1+s2k.Argon2SaltSize+3]
			if got := (Argon2{tpm[0], tpm[1], tpm[2]}); got != c.want {
				t.Fatalf("Argon2 t,p,m = %+v, want %+v", got, c.want)
			}
			op, err = raw.Next()
			if err != nil {
				t.Fatal(err)
			}
			if op.Tag != 18 || op.Contents[0] != 2 {
				t.Fatalf("second packet tag %d version %d, want 18 (SEIPD) version 2", op.Tag, op.Contents[0])
			}
			if _, err := raw.Next(); err != io.EOF {
				t.Fatalf("a third packet: %v", err)
			}

			// Parsed packets.
			packets := packet.NewReader(bytes.NewReader(msg))
			p, err := packets.Next()
			if err != nil {
				t.Fatal(err)
			}
			skesk, ok := p.(*packet.SymmetricKeyEncrypted)
			if !ok || skesk.Version != 6 || skesk.CipherFunc != packet.CipherAES256 || skesk.Mode != packet.AEADModeOCB {
				t.Fatalf("first packet %#v, want a v6 SKESK with AES-256 and OCB", p)
			}
			p, err = packets.Next()
			if err != nil {
				t.Fatal(err)
			}
			seipd, ok := p.(*packet.SymmetricallyEncrypted)
			if !ok || seipd.Version != 2 || seipd.Cipher != packet.CipherAES256 || seipd.Mode != packet.AEADModeOCB {
				t.Fatalf("second packet %T, want a v2 SEIPD with AES-256 and OCB", p)
			}
		})
	}
}

func dearmor(t *testing.T, msg []byte) []byte {
	t.Helper()
	s := string(msg)
	if !strings.HasPrefix(s, "-----BEGIN PGP MESSAGE-----\n") || !strings.HasSuffix(s, "-----END PGP MESSAGE-----\n") {
		t.Errorf("armor layout: %q", s)
	}
	if strings.Contains(s, "\n=") {
		t.Errorf("armor has a CRC24 line (RFC 9580 §6.1: should not for v6):\n%s", s)
	}
	block, err := armor.Decode(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if block.Type != "PGP MESSAGE" || len(block.Header) != 0 {
		t.Errorf("armor type %q headers %v", block.Type, block.Header)
	}
	b, err := io.ReadAll(block.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInterop: the library's own reader opens a backup, and Import refuses
// a message of the legacy shape (v4 SKESK, iterated S2K, v1 SEIPD) as
// corrupt: it is not what Export writes.
func TestInterop(t *testing.T) {
	want := []byte("state for another implementation")
	msg := export(t, want, tiny())
	md, err := openpgp.ReadMessage(bytes.NewReader(msg), nil, func([]openpgp.Key, bool) ([]byte, error) { return pass, nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(md.UnverifiedBody)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("library read %q, %v", got, err)
	}

	var legacy bytes.Buffer
	pt, err := openpgp.SymmetricallyEncrypt(&legacy, pass, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt.Write(want)
	pt.Close()
	wantCorrupt(t, "legacy message", legacy.Bytes(), nil)
}

// Vectors in testdata: good_tiny.{pgp,asc} decrypt with vectorPass to
// good_tiny.payload; fail_truncated.pgp and fail_tampered.pgp are
// ErrCorrupt. go test -run TestVectors -update rewrites them.
var vectorPass = []byte("qpc backup test vector")

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	want := read("good_tiny.payload")
	for _, name := range []string{"good_tiny.pgp", "good_tiny.asc"} {
		got, err := Import(bytes.NewReader(read(name)), vectorPass, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: got %q, %v; want %q", name, got, err, want)
		}
		if _, err := Import(bytes.NewReader(read(name)), pass, nil); !errors.Is(err, ErrPassphrase) {
			t.Errorf("%s with another passphrase: %v", name, err)
		}
	}
	for _, name := range []string{"fail_truncated.pgp", "fail_tampered.pgp"} {
		got, err := Import(bytes.NewReader(read(name)), vectorPass, nil)
		if !errors.Is(err, ErrCorrupt) || got != nil {
			t.Errorf("%s: got %q, %v; want ErrCorrupt", name, got, err)
		}
	}
}

func writeVectors(t *testing.T) {
	payload := []byte("quicprochat backup test vector 1\x00\x01\x02\xfe\xff\n")
	var bin, asc bytes.Buffer
	if err := Export(&bin, payload, vectorPass, tiny()); err != nil {
		t.Fatal(err)
	}
	opts := tiny()
	opts.Armor = true
	if err := Export(&asc, payload, vectorPass, opts); err != nil {
		t.Fatal(err)
	}
	b := bin.Bytes()
	tampered := bytes.Clone(b)
	tampered[len(tampered)-20] ^= 0x01 // in the ciphertext of the last chunk
	files := map[string][]byte{
		"good_tiny.payload":  payload,
		"good_tiny.pgp":      b,
		"good_tiny.asc":      asc.Bytes(),
		"fail_truncated.pgp": b[:len(b)-10],
		"fail_tampered.pgp":  tampered,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join("testdata", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzImport: any input is an error of one of the package's kinds (or,
// for a real backup, its payload); never a panic, never bytes with an
// error. The limits keep Argon2 and the payload small.
func FuzzImport(f *testing.F) {
	opts := tiny()
	small := export(f, []byte("seed"), opts)
	f.Add(small)
	f.Add(small[:len(small)/2])
	opts.Armor = true
	f.Add(export(f, []byte("armored seed"), opts))
	f.Add([]byte("-----BEGIN PGP MESSAGE-----\n\nwx4GBwIE\n-----END PGP MESSAGE-----\n"))
	f.Add([]byte{0xc3, 0x00})
	f.Add([]byte{})
	for _, name := range []string{"good_tiny.pgp", "fail_truncated.pgp", "fail_tampered.pgp"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	limits := &Options{MaxSize: 1 << 16, MaxArgon2MemoryExp: 10, MaxArgon2Passes: 2}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Import(bytes.NewReader(data), pass, limits)
		if err != nil {
			if got != nil {
				t.Fatalf("bytes returned with error %v", err)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrPassphrase) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error of no kind: %v", err)
			}
		}
	})
}
