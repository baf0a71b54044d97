package kt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/vrf"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TestIndependentTilesCheck fetches /kt/checkpoint and the tiles over HTTP
// and checks them with golang.org/x/mod/sumdb/note and tlog alone: the
// signature, that the level-0 tile hashes are the RFC 6962 leaf hashes of
// the entry bundles, that they hash to the checkpoint's root, and that a
// later checkpoint is consistent with an earlier one.
func TestIndependentTilesCheck(t *testing.T) {
	skey, vkey, _ := note.GenerateKey(rand.Reader, "kt.test/independent")
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	seed := make([]byte, 32)
	rand.Read(seed)
	vk, _ := vrf.NewPrivateKey(seed)
	d, err := kt.OpenDirectory(context.Background(), kt.DirectoryOptions{
		Dir: t.TempDir(), LogSigner: signer, LogVerifier: verifier, VRFKey: vk,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	srv := httptest.NewServer(kt.TilesHandler(d.LogDir(), "/kt"))
	defer srv.Close()

	get := func(p string) []byte {
		t.Helper()
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", p, resp.Status)
		}
		return b
	}
	type cp struct {
		n    int64
		root tlog.Hash
	}
	fetch := func() (cp, [][]byte) {
		raw := get("/kt/checkpoint")
		n, err := note.Open(raw, note.VerifierList(verifier))
		if err != nil {
			t.Fatalf("checkpoint signature: %v", err)
		}
		lines := strings.Split(n.Text, "\n")
		if lines[0] != "kt.test/independent" {
			t.Fatalf("origin %q", lines[0])
		}
		size, _ := strconv.ParseInt(lines[1], 10, 64)
		rootB, _ := base64.StdEncoding.DecodeString(lines[2])
		var c cp
		c.n = size
		copy(c.root[:], rootB)
		if size > 256 {
			t.Fatalf("test expects one tile, log has %d entries", size)
		}
		suffix := ""
		if size < 256 {
			suffix = fmt.Sprintf(".p/%d", size)
		}
		tile := get("/kt/tile/0/000" + suffix)
		bundle := get("/kt/tile/entries/000" + suffix)
		var entries [][]byte
		for len(bundle) > 0 {
			l := int(binary.BigEndian.Uint16(bundle))
			entries = append(entries, bundle[2:2+l])
			bundle = bundle[2+l:]
		}
		if int64(len(entries)) != size || int64(len(tile)) != 32*size {
			t.Fatalf("%d entries, %d tile bytes, size %d", len(entries), len(tile), size)
		}
		// Leaf hashes in the tile are the RFC 6962 hashes of the entries.
		for i, e := range entries {
			h := tlog.RecordHash(e)
			if !bytes.Equal(h[:], tile[32*i:32*i+32]) {
				t.Fatalf("entry %d hash differs from its tile", i)
			}
		}
		return c, entries
	}
	// storedHashes rebuilds tlog's stored hashes from the entries.
	hashReader := func(entries [][]byte) tlog.HashReaderFunc {
		var stored []tlog.Hash
		for i, e := range entries {
			hs, err := tlog.StoredHashes(int64(i), e, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
				out := make([]tlog.Hash, len(idx))
				for j, k := range idx {
					out[j] = stored[k]
				}
				return out, nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, hs...)
		}
		return func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, k := range idx {
				out[j] = stored[k]
			}
			return out, nil
		}
	}
	first, entries := fetch()
	root, err := tlog.TreeHash(first.n, hashReader(entries))
	if err != nil || root != first.root {
		t.Fatalf("tree hash of %d entries does not match the checkpoint: %v", first.n, err)
	}
	for i := range 3 {
		ch, _ := d.Enqueue(fmt.Sprintf("user%d", i), []byte("v"))
		if _, err := d.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-ch
	}
	second, entries := fetch()
	if second.n <= first.n {
		t.Fatalf("log did not grow: %d -> %d", first.n, second.n)
	}
	hr := hashReader(entries)
	if root, err := tlog.TreeHash(second.n, hr); err != nil || root != second.root {
		t.Fatal("second checkpoint's root does not match its tiles")
	}
	proof, err := tlog.ProveTree(second.n, first.n, hr)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(proof, second.n, second.root, first.n, first.root); err != nil {
		t.Fatalf("consistency: %v", err)
	}
	// Tessera's state is not served; nor are writes.
	for _, p := range []string{"/kt/.state/treeState", "/kt/../kt.db", "/kt/tile/0/abc"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
	}
	resp, _ := http.Post(srv.URL+"/kt/checkpoint", "text/plain", nil)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
	resp.Body.Close()
}
