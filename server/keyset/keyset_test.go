package keyset

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func keys(seed string, names ...string) []Key {
	var ks []Key
	for _, n := range names {
		ks = append(ks, Key{Name: n, Fingerprint: Fingerprint([]byte(seed + "/" + n))})
	}
	return ks
}

// TestCheck: the first check records, the same keys pass again, a
// differing key is refused by name (never by value), a key not recorded
// yet is recorded, and Recorded lists the names.
func TestCheck(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if names, err := b.Recorded(ctx); err != nil || len(names) != 0 {
		t.Fatalf("a fresh database records %v, %v", names, err)
	}
	mine := keys("a", "tls.key", "tokens.key")
	if err := b.Check(ctx, mine); err != nil {
		t.Fatalf("first check: %v", err)
	}
	if err := b.Check(ctx, mine); err != nil {
		t.Fatalf("the same keys again: %v", err)
	}
	other := keys("a", "tls.key")
	other = append(other, keys("b", "tokens.key")...)
	err = b.Check(ctx, other)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "tokens.key differs") || strings.Contains(err.Error(), "tls.key") {
		t.Fatalf("another tokens.key: %v; want ErrMismatch naming tokens.key alone", err)
	}
	if fp := other[1].Fingerprint; strings.Contains(err.Error(), string(fp[:])) || strings.Contains(strings.ToLower(err.Error()), hex.EncodeToString(fp[:])) {
		t.Errorf("the refusal shows the fingerprint")
	}
	if err := b.Check(ctx, append(mine, keys("a", "kt-vrf.key")...)); err != nil {
		t.Fatalf("a key used for the first time: %v", err)
	}
	if names, err := b.Recorded(ctx); err != nil || strings.Join(names, ",") != "kt-vrf.key,tls.key,tokens.key" {
		t.Fatalf("Recorded = %v, %v", names, err)
	}
}

// TestCheckRace: two first nodes with different key sets check at once,
// each through its own connection: exactly one wins, the other is
// refused.
func TestCheckRace(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for round := range 5 {
		names := []string{"tls.key", "tokens.key", "opaque.key"}
		for i := range names {
			names[i] = names[i] + "." + string(rune('a'+round))
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, seed := range []string{"x", "y"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := Open(ctx, url)
				if err != nil {
					errs[i] = err
					return
				}
				defer b.Close()
				errs[i] = b.Check(ctx, keys(seed, names...))
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else if !errors.Is(err, ErrMismatch) {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of two different key sets accepted (%v)", round, ok, errs)
		}
	}
}
