package secretfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	if err := Create(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "secret" {
		t.Fatalf("read back %q, %v", got, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != Mode {
		t.Errorf("mode %v, want %v", fi.Mode(), Mode)
	}
	onlyFile(t, dir, "k.key")
}

func TestCreateRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	if err := os.WriteFile(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Create(path, []byte("second")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over a file: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "first" {
		t.Errorf("the existing file now holds %q", got)
	}
	onlyFile(t, dir, "k.key")
}

// A symbolic link planted at the path must not redirect the secret into
// the file it names, nor create that file when it is dangling.
func TestCreateRefusesSymlink(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	for _, name := range []string{"existing", "dangling"} {
		target := filepath.Join(elsewhere, name)
		if name == "existing" {
			if err := os.WriteFile(target, []byte("theirs"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		path := filepath.Join(dir, name+".key")
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		if err := Create(path, []byte("secret")); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("%s link: Create = %v, want fs.ErrExist", name, err)
		}
		got, err := os.ReadFile(target)
		switch name {
		case "existing":
			if string(got) != "theirs" {
				t.Errorf("the link's target now holds %q", got)
			}
		case "dangling":
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the dangling link's target was created (%q, %v)", got, err)
			}
		}
	}
}

// Two starts racing to create one key leave one whole file and one
// fs.ErrExist, never a mix or a torn file.
func TestCreateConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.key")
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = Create(path, bytes.Repeat([]byte{byte('a' + i)}, 4096)) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("loser: %v, want fs.ErrExist", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates succeeded, want 1", won)
	}
	got, _ := os.ReadFile(path)
	if len(got) != 4096 || !bytes.Equal(got, bytes.Repeat(got[:1], 4096)) {
		t.Errorf("the file is torn or short (%d bytes)", len(got))
	}
	onlyFile(t, dir, "k.key")
}

func TestCreateMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "k.key")
	if err := Create(path, []byte("x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Create in a missing directory: %v, want fs.ErrNotExist", err)
	}
}

// onlyFile checks that no temporary file was left behind.
func onlyFile(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != name {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only %s", names, name)
	}
}
