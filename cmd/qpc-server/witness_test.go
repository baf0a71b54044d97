package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/kt/witness"
	"github.com/quicprochat/qpc/server"
)

var witnessAddr = regexp.MustCompile(`msg="witness serving" addr=(\S+)`)

// TestWitnessCommandServes runs `qpc-server witness` for the
// key-transparency log of a server data directory, has it cosign a
// checkpoint signed with that server's log key, and stops it by signal.
func TestWitnessCommandServes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srvDir, wDir := filepath.Join(dir, "server"), filepath.Join(dir, "witness")
	out, err := exec.Command("qpc-server", "kt-vkey", "--data-dir", srvDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	logVKey := strings.SplitN(string(out), "\n", 2)[0]
	keys, err := server.LoadOrCreateKTKeys(srvDir)
	if err != nil {
		t.Fatal(err)
	}

	p := start(t, "witness", "--data-dir", wDir, "--listen", "127.0.0.1:0", "--name", "witness.test/cmd", "--log", logVKey)
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		if m := witnessAddr.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no address; stderr:\n%s", p.stderr.String())
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}

	root := sha256.Sum256([]byte("a leaf"))
	text := fmt.Sprintf("%s\n1\n%s\n", keys.Signer.Name(), base64.StdEncoding.EncodeToString(root[:]))
	cp, err := note.Sign(&note.Note{Text: text}, keys.Signer)
	if err != nil {
		t.Fatal(err)
	}
	body := (&witness.Request{OldSize: 0, Checkpoint: cp}).Marshal()
	resp, err := http.Post("http://"+addr+"/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	cosigs, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add-checkpoint: %d %s", resp.StatusCode, cosigs)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}

	// The cosignature verifies with the keys witness vkey prints.
	out, err = exec.Command("qpc-server", "witness", "vkey", "--data-dir", wDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, vk := range strings.Fields(string(out)) {
		v, err := witness.NewCosignatureVerifier(vk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := note.Open(append(cp, cosigs...), note.VerifierList(v)); err != nil {
			t.Fatalf("cosignature by %s: %v", vk[:30], err)
		}
	}
}
