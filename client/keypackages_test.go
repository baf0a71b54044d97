package client

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
)

// TestValidKeyPackage: a KeyPackage from the server's pool is used only
// if key transparency vouches for it, so that a server cannot hand out a
// KeyPackage of its own (and read the Welcome sealed to it).
func TestValidKeyPackage(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	c := &Client{opts: Options{Now: func() time.Time { return now }}}
	ident := func(handle string) *mls.Identity {
		id, err := mls.NewBasicIdentity(DefaultSuite, []byte(handle))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	kp := func(id *mls.Identity, lastResort bool, created time.Time) []byte {
		kpp, err := mls.NewKeyPackage(id, &mls.KeyPackageOptions{LastResort: lastResort, Lifetime: oneTimeLifetime, Now: func() time.Time { return created }})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := kpp.KeyPackage.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	bob, forged, carol := ident("bob"), ident("bob"), ident("carol")
	ct := &Contact{Handle: "bob", DeviceKeys: [][]byte{[]byte("an older device"), bob.SignaturePub}}

	good, err := c.validKeyPackage(ct, kp(bob, false, now))
	if err != nil {
		t.Fatalf("bob's own one-time key package refused: %v", err)
	}
	if good.IsLastResort() {
		t.Fatal("one-time key package marked last-resort")
	}
	for _, bad := range []struct {
		name, want string
		raw        []byte
	}{
		{"signed by a key not in key transparency (the server's own)", "device keys", kp(forged, false, now)},
		{"another handle's, signed by its own key", "another handle", kp(carol, false, now)},
		{"expired", "", kp(bob, false, now.Add(-oneTimeLifetime-time.Hour))},
		{"not a key package", "", []byte("garbage")},
	} {
		_, err := c.validKeyPackage(ct, bad.raw)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error about %q", bad.name, err, bad.want)
		}
	}
}

// TestPruneKPs: expired private keys go, and past the bound the ones that
// expire first go, so that a pool drained again and again by someone with
// tokens cannot grow the local state without end.
func TestPruneKPs(t *testing.T) {
	st, err := state.Create(filepath.Join(t.TempDir(), "s"), []byte("local"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	// Keys 0..9 expire at now-5h .. now+4h.
	if err := st.Update(func(tx *state.Tx) error {
		for i := range 10 {
			rec := oneTimeKP{KeyPackage: []byte{byte(i)}, NotAfter: now.Add(time.Duration(i-5) * time.Hour)}
			if err := putJSON(tx, bucketOneTimeKPs, []byte{byte(i)}, rec); err != nil {
				return err
			}
		}
		return pruneKPs(tx, now, 3)
	}); err != nil {
		t.Fatal(err)
	}
	var left []byte
	if err := st.View(func(tx *state.Tx) error {
		return tx.ForEach(bucketOneTimeKPs, func(k, _ []byte) error { left = append(left, k...); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(left) // the state's keys are not stored in order
	if !bytes.Equal(left, []byte{7, 8, 9}) {
		t.Fatalf("kept %v, want the three that expire last [7 8 9]", left)
	}
}
