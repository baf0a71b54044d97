package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/internal/qrcode/qrcodetest"
)

// runCLI runs one qpc-server command in-process with no QPC_* environment.
func runCLI(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, lookupEnv: func(string) (string, bool) { return "", false }}
	if code := c.main(args); code != exitOK {
		t.Fatalf("qpc-server %v: exit %d; stderr:\n%s", args, code, errb.String())
	}
	return out.String(), errb.String()
}

// TestAddressQR: address --qr prints each address as a line of text and
// then as a QR code that decodes back to that line; without --qr the
// output is the address lines alone.
func TestAddressQR(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "init", "--data-dir", dir, "--listen", "127.0.0.1:4433")

	// --qr belongs to address alone.
	var errb bytes.Buffer
	c := &cli{stdout: &bytes.Buffer{}, stderr: &errb, lookupEnv: func(string) (string, bool) { return "", false }}
	if code := c.main([]string{"config", "--data-dir", dir, "--qr"}); code != exitUsage || !strings.Contains(errb.String(), "-qr") {
		t.Errorf("config --qr: exit %d, stderr %q; want a usage error", code, errb.String())
	}

	// A list a client would refuse is not printed.
	errb.Reset()
	c = &cli{stdout: &bytes.Buffer{}, stderr: &errb, lookupEnv: func(string) (string, bool) { return "", false }}
	if code := c.main([]string{"address", "--data-dir", dir, "--listen", "127.0.0.1:4433", "--other-nodes", "127.0.0.1:4433"}); code != exitError || !strings.Contains(errb.String(), "repeats") {
		t.Errorf("address --other-nodes with this node again: exit %d, stderr %q; want an error", code, errb.String())
	}

	for _, c := range []struct {
		name  string
		flags []string
		hosts []string // the host part of each address, in order
	}{
		{"clearnet", nil, []string{"@127.0.0.1:4433"}},
		{"clearnet and onion", []string{"--onion"}, []string{"@127.0.0.1:4433", ".onion"}},
		{"onion only", []string{"--onion-only"}, []string{".onion"}},
		{"two nodes", []string{"--other-nodes", "node2.example.org:4433"}, []string{"@127.0.0.1:4433,node2.example.org:4433", ".onion"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"address", "--data-dir", dir, "--listen", "127.0.0.1:4433"}, c.flags...)
			plain, _ := runCLI(t, args...)
			want := strings.Fields(plain)
			if len(want) != len(c.hosts) {
				t.Fatalf("address printed %q, want %d addresses", plain, len(c.hosts))
			}

			out, _ := runCLI(t, append(args, "--qr")...)
			rest := out
			for i, addr := range want {
				if !strings.HasPrefix(addr, "qpc://") || !strings.Contains(addr, c.hosts[i]) {
					t.Fatalf("address %d is %q, want qpc://...%s", i, addr, c.hosts[i])
				}
				// The text line first, then its code.
				line, after, ok := strings.Cut(rest, "\n")
				if !ok || line != addr {
					t.Fatalf("want the line %q next, got %q; output:\n%s", addr, line, out)
				}
				code, err := qrcodetest.Find(after)
				if err != nil {
					t.Fatalf("no QR code after %q: %v; output:\n%s", addr, err, out)
				}
				if !strings.HasPrefix(after, code) {
					t.Fatalf("the code does not follow %q directly; output:\n%s", addr, out)
				}
				got, err := qrcodetest.Decode(code)
				if err != nil {
					t.Fatalf("decode the code after %q: %v\n%s", addr, err, code)
				}
				if got != addr {
					t.Errorf("code decodes to %q, the printed address is %q", got, addr)
				}
				rest = after[len(code):]
			}
			if rest != "" {
				t.Errorf("trailing output after the last code: %q", rest)
			}
		})
	}
}
