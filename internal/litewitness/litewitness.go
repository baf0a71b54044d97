// Package litewitness runs litewitness, the C2SP tlog-witness
// implementation of filippo.io/torchwood (v0.6.1), as a real, independent
// witness on loopback for tests. Call Start first; it builds litewitness
// and witnessctl with `go install` into a temporary directory (once per
// process), starts an ssh-agent holding a fresh Ed25519 key (litewitness
// signs through one) and the witness on a free loopback port. AddLog makes
// the witness trust a log.
//
// A test that cannot build or run it is skipped, except under CI=true,
// where it fails.
package litewitness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Version is the torchwood release the witness is built from.
const Version = "v0.6.1"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// unavailable fails the test under CI=true and skips it otherwise.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("litewitness: "+format, args...)
	}
	t.Skipf("litewitness unavailable (fails under CI=true): "+format, args...)
}

// Binaries builds litewitness and witnessctl once per process and
// returns the directory holding them.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "qpc-litewitness-bin")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "install",
			"filippo.io/torchwood/cmd/litewitness@"+Version,
			"filippo.io/torchwood/cmd/witnessctl@"+Version)
		// Outside any module: the tool's own go.mod decides its
		// dependencies, which stay out of qpc's.
		cmd.Dir = binDir
		cmd.Env = append(os.Environ(), "GOBIN="+binDir, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go install: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		unavailable(t, "%v", buildErr)
	}
	return binDir
}

// Witness is one running litewitness.
type Witness struct {
	Name string // its key name, in its cosignature lines
	VKey string // its cosignature/v1 verifier key (C2SP signed-note, type 0x04)
	URL  string // its tlog-witness prefix: POST URL+"add-checkpoint"

	dir, db, sock, keyHash, addr string
	bin                          string
	agent, cmd                   *exec.Cmd
	logs                         *logBuffer
	mu                           sync.Mutex
}

// Start starts a witness named name (URL-like, e.g. "witness.test/a").
// It is stopped when the test ends.
func Start(t testing.TB, name string) *Witness {
	t.Helper()
	bin := Binaries(t)
	for _, p := range []string{"ssh-agent", "ssh-add", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			unavailable(t, "%s not found: %v", p, err)
		}
	}
	// The ssh-agent socket path must be short (sun_path): not t.TempDir.
	dir, err := os.MkdirTemp("", "lw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &Witness{Name: name, dir: dir, db: filepath.Join(dir, "w.db"), sock: filepath.Join(dir, "a"), bin: bin}

	key := filepath.Join(dir, "key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := readSSHPublicKey(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(pub)
	w.keyHash = hex.EncodeToString(h[:])
	// Our own derivation of its verifier key (C2SP signed-note: key ID =
	// SHA-256(name || 0x0A || 0x04 || key)[:4]); Start checks that the
	// witness announces the same one.
	std, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		t.Fatal(err)
	}
	if w.VKey, err = fnote.VKeyToCosignatureV1(std); err != nil {
		t.Fatal(err)
	}

	w.agent = exec.Command("ssh-agent", "-D", "-a", w.sock)
	w.agent.Stdout, w.agent.Stderr = nil, nil
	if err := w.agent.Start(); err != nil {
		unavailable(t, "ssh-agent: %v", err)
	}
	t.Cleanup(func() { w.agent.Process.Kill(); w.agent.Wait() })
	if err := waitFor("unix", w.sock, 5*time.Second); err != nil {
		t.Fatalf("ssh-agent: %v", err)
	}
	add := exec.Command("ssh-add", key)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+w.sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	ln.Close()
	w.URL = "http://" + w.addr + "/"
	w.start(t)
	t.Cleanup(w.Stop)
	return w
}

func (w *Witness) start(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logs = &logBuffer{}
	w.cmd = exec.Command(filepath.Join(w.bin, "litewitness"),
		"-db", w.db, "-name", w.Name, "-key", w.keyHash, "-ssh-agent", w.sock, "-listen", w.addr)
	w.cmd.Stdout, w.cmd.Stderr = w.logs, w.logs
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("litewitness: %v", err)
	}
	if err := waitFor("tcp", w.addr, 10*time.Second); err != nil {
		w.cmd.Process.Kill()
		w.cmd.Wait()
		t.Fatalf("litewitness did not start: %v\n%s", err, w.logs)
	}
	// What the witness says its key is must be what we derived (its log
	// line may follow the listener by a moment).
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(w.logs.String(), w.VKey) {
		if time.Now().After(deadline) {
			t.Fatalf("litewitness announces another verifier key than %s:\n%s", w.VKey, w.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer is what the witness process writes, read while it writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Stop stops the witness (SIGINT, as an operator would), keeping its
// database: Restart resumes it.
func (w *Witness) Stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil {
		return
	}
	w.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		w.cmd.Process.Kill()
		<-done
	}
	w.cmd = nil
}

// Restart starts a stopped witness again on the same address.
func (w *Witness) Restart(t testing.TB) {
	t.Helper()
	w.start(t)
}

// Logs returns what the running (or last) witness process printed.
func (w *Witness) Logs() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.logs == nil {
		return ""
	}
	return w.logs.String()
}

// AddLog makes the witness trust the log of origin, whose checkpoints
// verify under the note verifier key vkey (witnessctl add-log, add-key).
func (w *Witness) AddLog(t testing.TB, origin, vkey string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctl := filepath.Join(w.bin, "witnessctl")
	for _, args := range [][]string{
		{"add-log", "-db", w.db, "-origin", origin},
		{"add-key", "-db", w.db, "-origin", origin, "-key", vkey},
	} {
		if out, err := exec.CommandContext(ctx, ctl, args...).CombinedOutput(); err != nil {
			t.Fatalf("witnessctl %s: %v\n%s", args[0], err, out)
		}
	}
}

// PolicyLine is the witness's line of a witness policy.
func (w *Witness) PolicyLine() string {
	return fmt.Sprintf("witness %s %s %s", w.Name, w.VKey, w.URL)
}

// Policy is a k-of-n policy over ws, in the Sigsum/Tessera policy format.
func Policy(k int, ws ...*Witness) string {
	var b strings.Builder
	var names []string
	for i, w := range ws {
		n := fmt.Sprintf("w%d", i)
		fmt.Fprintf(&b, "witness %s %s %s\n", n, w.VKey, w.URL)
		names = append(names, n)
	}
	fmt.Fprintf(&b, "group g %d %s\nquorum g\n", k, strings.Join(names, " "))
	return b.String()
}

func waitFor(network, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readSSHPublicKey reads an OpenSSH "ssh-ed25519 <base64>" public key file
// (RFC 8709 §4: string "ssh-ed25519", string key).
func readSSHPublicKey(path string) (ed25519.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return nil, errors.New("empty public key file")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 2 || fields[0] != "ssh-ed25519" {
		return nil, fmt.Errorf("%s: not an ssh-ed25519 key", path)
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return nil, err
	}
	var parts [][]byte
	for len(blob) >= 4 {
		n := binary.BigEndian.Uint32(blob)
		if uint64(len(blob)-4) < uint64(n) {
			break
		}
		parts = append(parts, blob[4:4+n])
		blob = blob[4+n:]
	}
	if len(parts) != 2 || string(parts[0]) != "ssh-ed25519" || len(parts[1]) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s: malformed ssh-ed25519 key", path)
	}
	return ed25519.PublicKey(parts[1]), nil
}
