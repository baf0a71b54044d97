package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/internal/qrcode/qrcodetest"
	"github.com/quicprochat/qpc/invite"
)

// TestInvite: invite prints one invite that parses and carries the
// server's address and key-transparency pin, onion endpoint included when
// the server serves one; --qr adds it as a QR code, in upper case, that
// decodes to the same invite; what a client could not dial is refused.
func TestInvite(t *testing.T) {
	dir := t.TempDir()
	runCLI(t, "init", "--data-dir", dir, "--listen", "127.0.0.1:4433")
	addr, _ := runCLI(t, "address", "--data-dir", dir, "--listen", "127.0.0.1:4433")
	vkey, _ := runCLI(t, "kt-vkey", "--data-dir", dir)

	out, _ := runCLI(t, "invite", "--data-dir", dir, "--listen", "127.0.0.1:4433")
	inv, err := invite.Parse(out)
	if err != nil {
		t.Fatalf("invite %q: %v", out, err)
	}
	if got := inv.Address(false); got != strings.TrimSpace(addr) {
		t.Errorf("invite address %s, address prints %s", got, addr)
	}
	if inv.Onion != "" || !strings.HasPrefix(vkey, inv.LogKey+"\n") {
		t.Errorf("invite %+v, kt-vkey %q", inv, vkey)
	}

	out, _ = runCLI(t, "invite", "--data-dir", dir, "--listen", "0.0.0.0:4433", "--host", "chat.example.org", "--onion", "--qr")
	line, after, _ := strings.Cut(out, "\n")
	inv, err = invite.Parse(line)
	if err != nil || inv.UDP != "chat.example.org:4433" || !strings.HasSuffix(inv.Onion, ".onion:4433") {
		t.Fatalf("invite with --host and --onion: %+v, %v", inv, err)
	}
	code, err := qrcodetest.Find(after)
	if err != nil {
		t.Fatal(err)
	}
	got, err := qrcodetest.Decode(code)
	if err != nil || got != strings.ToUpper(line) {
		t.Errorf("the QR code decodes to %q (%v), want the invite in upper case", got, err)
	}

	// A server of several nodes: the invite names them all.
	out, _ = runCLI(t, "invite", "--data-dir", dir, "--listen", "0.0.0.0:4433", "--host", "node1.example.org", "--other-nodes", "node2.example.org:4433,node3.example.org:4433")
	inv, err = invite.Parse(out)
	if err != nil || inv.Address(false) != "qpc://"+strings.TrimSpace(addr)[6:49]+"@node1.example.org:4433,node2.example.org:4433,node3.example.org:4433" {
		t.Fatalf("invite with --other-nodes: %+v, %v", inv, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "0.0.0.0:4433"}, "give --host"},
		{[]string{"--listen", "127.0.0.1:4433", "--other-nodes", "127.0.0.1:4433"}, "twice"},
		{[]string{"--listen", "127.0.0.1:4433", "--other-nodes", "node2.example.org:4433, node3.example.org:4433"}, "not host:port"},
		{[]string{"--listen", "127.0.0.1:0"}, "port 0"},
		{[]string{"--kt=false"}, "kt is off"},
		{[]string{"--onion-only", "--host", "x.example"}, "onion only"},
	} {
		var errb bytes.Buffer
		c := &cli{stdout: &bytes.Buffer{}, stderr: &errb, lookupEnv: func(string) (string, bool) { return "", false }}
		if code := c.main(append([]string{"invite", "--data-dir", dir}, tc.args...)); code != exitError || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("invite %v: exit %d, stderr %q; want %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
