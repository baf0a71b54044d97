package onion

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/kt/witness"
	"github.com/quicprochat/qpc/tor"
)

var witnessOnionRe = regexp.MustCompile(`^http://([a-z2-7]{56}\.onion(:[0-9]+)?)/add-checkpoint$`)

// TestWitnessOnion runs qpc-server witness --onion on the private Tor
// network; a log that knows only the onion URL gets its checkpoint
// cosigned through tor.
func TestWitnessOnion(t *testing.T) {
	nw, socks := network(t)
	bin := buildServer(t)
	dir := t.TempDir()
	torrc := writeTorrc(t, nw, dir)
	skey, vkey, err := note.GenerateKey(rand.Reader, "witness.test/onion-log")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	wdir := filepath.Join(dir, "witness")
	w := startDaemon(t, "qpc-server witness", exec.Command(bin, "witness", "--data-dir", wdir, "--listen", "127.0.0.1:0",
		"--log", vkey, "--onion", "--tor-config", torrc))
	var host string
	select {
	case l := <-w.lines:
		m := witnessOnionRe.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("witness printed %q, want its onion URL", l)
		}
		host = m[1]
		if m[2] == "" {
			host += ":80"
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("no onion URL from qpc-server witness within 2 minutes")
	}

	root := sha256.Sum256([]byte("leaf"))
	cp, err := note.Sign(&note.Note{Text: fmt.Sprintf("witness.test/onion-log\n1\n%s\n", base64.StdEncoding.EncodeToString(root[:]))}, signer)
	if err != nil {
		t.Fatal(err)
	}
	d := &tor.SOCKSDialer{Addr: socks}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, host)
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+host+"/add-checkpoint",
		bytes.NewReader((&witness.Request{OldSize: 0, Checkpoint: cp}).Marshal()))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("add-checkpoint through tor: %v", err)
	}
	cosigs, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add-checkpoint through tor: %d %s", resp.StatusCode, cosigs)
	}
	out, err := exec.Command(bin, "witness", "vkey", "--data-dir", wdir).Output()
	if err != nil {
		t.Fatal(err)
	}
	v, err := witness.NewCosignatureVerifier(strings.Fields(string(out))[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(append(cp, cosigs...), note.VerifierList(v)); err != nil {
		t.Fatalf("cosignature from the onion witness: %v", err)
	}
	w.stop(t)
}
