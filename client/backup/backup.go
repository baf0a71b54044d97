package backup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Errors returned by Import and ImportWithPrompt; test with errors.Is.
var (
	// ErrPassphrase: the passphrase does not open the backup.
	ErrPassphrase = errors.New("backup: wrong passphrase")
	// ErrCorrupt: the backup is truncated, tampered with, or not a backup
	// this package writes.
	ErrCorrupt = errors.New("backup: corrupt or truncated")
	// ErrTooLarge: the payload, or the Argon2 cost the file asks for, is
	// over the Options limits.
	ErrTooLarge = errors.New("backup: too large")
	// ErrTooManyTries: ImportWithPrompt got maxTries wrong passphrases.
	ErrTooManyTries = errors.New("backup: too many wrong passphrases")
)

// Defaults for the zero Options.
const (
	// DefaultPasses, DefaultParallelism and DefaultMemoryExp are RFC 9106's
	// second recommended Argon2id option (t=3, p=4, 64 MiB) as the Argon2
	// S2K specifier encodes it (memory = 2^MemoryExp KiB).
	DefaultPasses      = 3
	DefaultParallelism = 4
	DefaultMemoryExp   = 16

	// DefaultMaxSize is the payload limit: 1 GiB.
	DefaultMaxSize = 1 << 30
	// DefaultMaxArgon2MemoryExp refuses files that ask for more than
	// 2^21 KiB = 2 GiB of Argon2 memory.
	DefaultMaxArgon2MemoryExp = 21
	// DefaultMaxArgon2Passes refuses files that ask for more passes.
	DefaultMaxArgon2Passes = 16
	// DefaultMaxTries is ImportWithPrompt's limit when maxTries <= 0.
	DefaultMaxTries = 5
)

// Argon2 are the Argon2id parameters of the S2K specifier (RFC 9580
// §3.7.1.4). A zero field takes its default.
type Argon2 struct {
	Passes      uint8 // t, the number of passes; default 3
	Parallelism uint8 // p, the lanes; default 4
	// MemoryExp: the memory is 2^MemoryExp KiB; default 16 (64 MiB). It
	// must be at least 3+ceil(log2(p)) (8*p KiB) and at most 31.
	MemoryExp uint8
}

// Options tunes Export and Import; the zero value (or nil) is the default.
type Options struct {
	// Argon2 is what Export writes into the S2K specifier. Import reads
	// the parameters from the file and ignores this field.
	Argon2 Argon2
	// Armor makes Export write ASCII armor instead of binary. Import
	// detects armor by itself.
	Armor bool
	// MaxSize is the largest payload, in bytes, that Export writes and
	// Import returns (ErrTooLarge beyond); default 1 GiB.
	MaxSize int64
	// MaxArgon2MemoryExp and MaxArgon2Passes are the largest Argon2 cost
	// Import runs and Export writes (ErrTooLarge beyond); defaults 21
	// (2 GiB) and 16.
	MaxArgon2MemoryExp uint8
	MaxArgon2Passes    uint8
}

func (o *Options) argon2() Argon2 {
	var a Argon2
	if o != nil {
		a = o.Argon2
	}
	if a.Passes == 0 {
		a.Passes = DefaultPasses
	}
	if a.Parallelism == 0 {
		a.Parallelism = DefaultParallelism
	}
	if a.MemoryExp == 0 {
		a.MemoryExp = DefaultMemoryExp
	}
	return a
}

func (o *Options) maxSize() int64 {
	if o == nil || o.MaxSize <= 0 {
		return DefaultMaxSize
	}
	return o.MaxSize
}

func (o *Options) maxMemoryExp() uint8 {
	if o == nil || o.MaxArgon2MemoryExp == 0 {
		return DefaultMaxArgon2MemoryExp
	}
	return o.MaxArgon2MemoryExp
}

func (o *Options) maxPasses() uint8 {
	if o == nil || o.MaxArgon2Passes == 0 {
		return DefaultMaxArgon2Passes
	}
	return o.MaxArgon2Passes
}

// check reports whether a is valid (RFC 9580 §3.7.1.4) and within o's
// limits. A valid cost over the limits wraps ErrTooLarge.
func (o *Options) check(a Argon2) error {
	if a.Passes == 0 || a.Parallelism == 0 {
		return errors.New("argon2: passes and parallelism must be non-zero")
	}
	if a.MemoryExp > 31 || uint64(1)<<a.MemoryExp < 8*uint64(a.Parallelism) {
		return fmt.Errorf("argon2: memory 2^%d KiB out of range for parallelism %d", a.MemoryExp, a.Parallelism)
	}
	if a.MemoryExp > o.maxMemoryExp() {
		return fmt.Errorf("%w: argon2 memory 2^%d KiB, limit 2^%d KiB", ErrTooLarge, a.MemoryExp, o.maxMemoryExp())
	}
	if a.Passes > o.maxPasses() {
		return fmt.Errorf("%w: argon2 passes %d, limit %d", ErrTooLarge, a.Passes, o.maxPasses())
	}
	return nil
}

// The algorithms Export writes.
const (
	cipher   = packet.CipherAES256
	aeadMode = packet.AEADModeOCB
)

// Export writes payload to w as an OpenPGP message encrypted with
// passphrase: a v6 SKESK with Argon2 S2K and a v2 SEIPD (AES-256, OCB). It
// refuses an empty passphrase, invalid Argon2 parameters and a payload over
// opts.MaxSize (ErrTooLarge). On error, w may hold a partial message.
func Export(w io.Writer, payload []byte, passphrase []byte, opts *Options) error {
	if len(passphrase) == 0 {
		return errors.New("backup: empty passphrase")
	}
	if int64(len(payload)) > opts.maxSize() {
		return fmt.Errorf("%w: payload of %d bytes, limit %d", ErrTooLarge, len(payload), opts.maxSize())
	}
	a := opts.argon2()
	if err := opts.check(a); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	config := &packet.Config{
		DefaultCipher: cipher,
		AEADConfig:    &packet.AEADConfig{DefaultMode: aeadMode},
		S2KConfig: &s2k.Config{
			S2KMode: s2k.Argon2S2K,
			Argon2Config: &s2k.Argon2Config{
				NumberOfPasses:      a.Passes,
				DegreeOfParallelism: a.Parallelism,
				Memory:              uint32(1) << a.MemoryExp, // KiB; encodes back to MemoryExp
			},
		},
	}

	out := w
	var armored io.WriteCloser
	if opts != nil && opts.Armor {
		var err error
		// RFC 9580 §6.1: no CRC24 footer for a v6/SEIPD v2 message.
		armored, err = armor.EncodeWithChecksumOption(w, "PGP MESSAGE", nil, false)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		out = armored
	}
	// Binary literal data, no file name, no date: nothing about the
	// payload leaks into the (encrypted) metadata.
	pt, err := openpgp.SymmetricallyEncrypt(out, passphrase, &openpgp.FileHints{}, config)
	if err != nil {
		return fmt.Errorf("backup: encrypt: %w", err)
	}
	if _, err := pt.Write(payload); err != nil {
		return fmt.Errorf("backup: encrypt: %w", err)
	}
	if err := pt.Close(); err != nil {
		return fmt.Errorf("backup: encrypt: %w", err)
	}
	if armored != nil {
		if err := armored.Close(); err != nil {
			return fmt.Errorf("backup: armor: %w", err)
		}
		// The armor writer ends on "-----END PGP MESSAGE-----"; a newline
		// makes a well-formed text file.
		if _, err := io.WriteString(w, "\n"); err != nil {
			return fmt.Errorf("backup: armor: %w", err)
		}
	}
	return nil
}

// sourceReader remembers the first error of the underlying reader other
// than io.EOF, so that a failing disk is not reported as a corrupt backup.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// Import reads a backup written by Export from r and returns its payload.
// The passphrase is tried only after the packet structure was checked, so a
// truncated or malformed file is ErrCorrupt whatever the passphrase. See
// the package documentation for the errors. On error the returned slice is
// nil.
func Import(r io.Reader, passphrase []byte, opts *Options) ([]byte, error) {
	src := &sourceReader{r: r}
	payload, err := importFrom(src, passphrase, opts)
	if err != nil {
		if src.err != nil {
			return nil, fmt.Errorf("backup: read: %w", src.err)
		}
		return nil, err
	}
	return payload, nil
}

// corrupt wraps a detail in ErrCorrupt. Only the text of err is kept: the
// library's error types are not part of this package's API.
func corrupt(what string, err error) error {
	if err == nil {
		return fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, what, err)
}

// armorPrefix starts every ASCII-armored message; a binary OpenPGP packet
// starts with a byte that has its high bit set, so the two cannot be
// confused.
var armorPrefix = []byte("-----BEGIN PGP MESSAGE-----")

func importFrom(r io.Reader, passphrase []byte, opts *Options) ([]byte, error) {
	br := bufio.NewReader(r)
	in := io.Reader(br)
	// Armor: allow leading white space, as text files get.
	for {
		b, err := br.Peek(1)
		if err != nil {
			return nil, corrupt("empty input", err)
		}
		if b[0] != ' ' && b[0] != '\t' && b[0] != '\r' && b[0] != '\n' {
			break
		}
		_, _ = br.ReadByte() // just peeked: cannot fail
	}
	if head, _ := br.Peek(len(armorPrefix)); bytes.Equal(head, armorPrefix) {
		block, err := armor.Decode(br)
		if err != nil {
			return nil, corrupt("armor", err)
		}
		if block.Type != "PGP MESSAGE" {
			return nil, corrupt("armor type "+block.Type, nil)
		}
		in = bufio.NewReader(block.Body)
	}

	skesk, err := readSKESK(in, opts)
	if err != nil {
		return nil, err
	}
	packets := packet.NewReader(&framedReader{r: in})
	p, err := packets.Next()
	if err != nil {
		return nil, corrupt("encrypted data packet", err)
	}
	seipd, ok := p.(*packet.SymmetricallyEncrypted)
	if !ok || seipd.Version != 2 {
		return nil, corrupt(fmt.Sprintf("want a v2 SEIPD packet after the SKESK, got %T", p), nil)
	}

	// The structure holds so far: now the passphrase. A v6 SKESK seals the
	// session key with AEAD, so a wrong passphrase fails here and only here.
	key, _, err := skesk.Decrypt(passphrase)
	if err != nil {
		return nil, ErrPassphrase
	}
	defer clear(key)
	plain, err := seipd.Decrypt(seipd.Cipher, key)
	if err != nil {
		return nil, corrupt("encrypted data", err)
	}
	payload, err := readLiteral(plain, opts.maxSize())
	if err == nil {
		// The final AEAD tag (over the total length) is checked on Close:
		// without it, a cut at a chunk boundary would go unnoticed.
		if cerr := plain.Close(); cerr != nil {
			err = corrupt("encrypted data", cerr)
		}
	}
	if err == nil {
		err = expectEnd(packets, "after the encrypted data")
	}
	if err != nil {
		clear(payload)
		return nil, err
	}
	return payload, nil
}

// readSKESK reads the one SKESK a backup starts with, checks it is a v6
// one with an Argon2 S2K whose cost is within opts' limits, and only then
// hands it to the library's parser (which would derive the key with
// whatever cost the file names).
func readSKESK(in io.Reader, opts *Options) (*packet.SymmetricKeyEncrypted, error) {
	var tag [1]byte
	if _, err := io.ReadFull(in, tag[:]); err != nil {
		return nil, corrupt("SKESK packet", err)
	}
	// New packet format (RFC 9580 §4.2.1), tag 3; the legacy format is not
	// written by RFC 9580 implementations.
	if tag[0] != 0xC0|3 {
		return nil, corrupt(fmt.Sprintf("want a SKESK packet (0xc3), got header 0x%02x", tag[0]), nil)
	}
	n, err := readLength(in)
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(in, body); err != nil {
		return nil, corrupt("SKESK packet", err)
	}
	a, err := skeskArgon2(body)
	if err != nil {
		return nil, err
	}
	if err := opts.check(a); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return nil, fmt.Errorf("backup: %w", err)
		}
		return nil, corrupt("SKESK", err)
	}

	var whole bytes.Buffer
	whole.Grow(6 + len(body))
	whole.Write(tag[:])
	writeLength(&whole, len(body))
	whole.Write(body)
	p, err := packet.Read(&whole)
	if err != nil {
		return nil, corrupt("SKESK packet", err)
	}
	skesk, ok := p.(*packet.SymmetricKeyEncrypted)
	if !ok || skesk.Version != 6 {
		return nil, corrupt("SKESK packet", nil)
	}
	return skesk, nil
}

// maxSKESK bounds the SKESK body: with AES-256, EAX (16-byte IV) and
// Argon2 it is 90 bytes.
const maxSKESK = 255

// readLength reads a new-format packet length (RFC 9580 §4.2.1.1); a
// partial length is not allowed for a SKESK.
func readLength(in io.Reader) (int, error) {
	var b [4]byte
	if _, err := io.ReadFull(in, b[:1]); err != nil {
		return 0, corrupt("SKESK length", err)
	}
	var n int
	switch {
	case b[0] < 192:
		n = int(b[0])
	case b[0] < 224:
		if _, err := io.ReadFull(in, b[1:2]); err != nil {
			return 0, corrupt("SKESK length", err)
		}
		n = (int(b[0])-192)<<8 + int(b[1]) + 192
	case b[0] == 255:
		if _, err := io.ReadFull(in, b[:]); err != nil {
			return 0, corrupt("SKESK length", err)
		}
		n = int(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	default:
		return 0, corrupt("SKESK with a partial length", nil)
	}
	if n > maxSKESK {
		return 0, corrupt(fmt.Sprintf("SKESK of %d bytes", n), nil)
	}
	return n, nil
}

// writeLength writes n (at most maxSKESK) as a new-format length.
func writeLength(w *bytes.Buffer, n int) {
	if n < 192 {
		w.WriteByte(byte(n))
		return
	}
	n -= 192
	w.WriteByte(byte(n>>8) + 192)
	w.WriteByte(byte(n))
}

// skeskArgon2 extracts the Argon2 parameters of a v6 SKESK body
// (RFC 9580 §5.3.2):
//
//	version 6 | count | cipher | AEAD mode | S2K length | S2K | IV | key+tag
//
// with the Argon2 S2K (§3.7.1.4): type 4 | salt[16] | t | p | m.
func skeskArgon2(body []byte) (Argon2, error) {
	const s2kLen = 1 + s2k.Argon2SaltSize + 3
	if len(body) < 5+s2kLen {
		return Argon2{}, corrupt("short SKESK", nil)
	}
	if body[0] != 6 {
		return Argon2{}, corrupt(fmt.Sprintf("SKESK version %d, want 6 (AEAD)", body[0]), nil)
	}
	switch packet.CipherFunction(body[2]) {
	case packet.CipherAES128, packet.CipherAES192, packet.CipherAES256:
	default:
		return Argon2{}, corrupt(fmt.Sprintf("SKESK cipher %d", body[2]), nil)
	}
	mode := packet.AEADMode(body[3])
	switch mode {
	case packet.AEADModeEAX, packet.AEADModeOCB, packet.AEADModeGCM:
	default:
		return Argon2{}, corrupt(fmt.Sprintf("SKESK AEAD mode %d", body[3]), nil)
	}
	if int(body[4]) != s2kLen || body[5] != byte(s2k.Argon2S2K) {
		return Argon2{}, corrupt("SKESK without an Argon2 S2K", nil)
	}
	if int(body[1]) != 3+s2kLen+mode.IvLength() {
		return Argon2{}, corrupt("SKESK field count", nil)
	}
	if len(body) != 5+s2kLen+mode.IvLength()+packet.CipherFunction(body[2]).KeySize()+mode.TagLength() {
		return Argon2{}, corrupt("SKESK length", nil)
	}
	p := body[5+1+s2k.Argon2SaltSize:]
	return Argon2{Passes: p[0], Parallelism: p[1], MemoryExp: p[2]}, nil
}

// readLiteral reads the one Literal Data packet inside the SEIPD and the
// end of the decrypted stream. Padding packets (RFC 9580 §5.14) are
// skipped.
func readLiteral(plain io.Reader, max int64) ([]byte, error) {
	packets := packet.NewReader(plain)
	var lit *packet.LiteralData
	for lit == nil {
		p, err := packets.Next()
		if err != nil {
			return nil, corrupt("literal data packet", err)
		}
		switch p := p.(type) {
		case *packet.LiteralData:
			lit = p
		case packet.Padding:
		default:
			return nil, corrupt(fmt.Sprintf("want literal data, got %T", p), nil)
		}
	}
	payload, err := io.ReadAll(io.LimitReader(lit.Body, max+1))
	if err != nil {
		clear(payload)
		return nil, corrupt("encrypted data", err)
	}
	if int64(len(payload)) > max {
		clear(payload)
		return nil, fmt.Errorf("%w: payload over %d bytes", ErrTooLarge, max)
	}
	if err := expectEnd(packets, "after the literal data"); err != nil {
		clear(payload)
		return nil, err
	}
	return payload, nil
}

// expectEnd reads packets to the end, allowing only padding packets.
func expectEnd(packets *packet.Reader, where string) error {
	for {
		p, err := packets.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return corrupt(where, err)
		}
		if _, ok := p.(packet.Padding); !ok {
			return corrupt(fmt.Sprintf("unexpected %T %s", p, where), nil)
		}
	}
}

// ImportWithPrompt imports the backup in r, asking prompt for the
// passphrase. attempt counts from 1. After each wrong passphrase it seeks r
// back to where it was and asks again; after maxTries wrong ones (5 when
// maxTries <= 0) it returns an error that wraps both ErrTooManyTries and
// ErrPassphrase. Any other error, including one from prompt, ends the loop
// at once.
func ImportWithPrompt(r io.ReadSeeker, prompt func(attempt int) ([]byte, error), maxTries int, opts *Options) ([]byte, error) {
	if maxTries <= 0 {
		maxTries = DefaultMaxTries
	}
	start, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("backup: seek: %w", err)
	}
	for attempt := 1; attempt <= maxTries; attempt++ {
		if attempt > 1 {
			if _, err := r.Seek(start, io.SeekStart); err != nil {
				return nil, fmt.Errorf("backup: seek: %w", err)
			}
		}
		pass, err := prompt(attempt)
		if err != nil {
			return nil, err
		}
		payload, err := Import(r, pass, opts)
		if !errors.Is(err, ErrPassphrase) {
			return payload, err
		}
	}
	return nil, fmt.Errorf("%w (%d tries): %w", ErrTooManyTries, maxTries, ErrPassphrase)
}
