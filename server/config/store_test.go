package config

import (
	"bytes"
	"strings"
	"testing"
)

// TestConfigStore: the store is bbolt unless a postgres:// URL is given,
// by flag, environment or file; anything else is refused; a password in
// the URL never reaches the rendered configuration or an error.
func TestConfigStore(t *testing.T) {
	c, err := Load(Flags{"data_dir": dataDir(t, "")}, mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store != StoreBolt || c.StorePostgres() {
		t.Fatalf("default store %q, want %q", c.Store, StoreBolt)
	}
	const url = "postgres://qpc:hunter2secret@db.example:5432/qpc?sslmode=verify-full"
	for _, layer := range []struct {
		file  string
		env   map[string]string
		flags Flags
	}{
		{file: "store = \"" + url + "\"\n"},
		{env: map[string]string{"QPC_STORE": url}},
		{flags: Flags{"store": url}},
	} {
		flags := Flags{"data_dir": dataDir(t, layer.file)}
		for k, v := range layer.flags {
			flags[k] = v
		}
		c, err := Load(flags, mapEnv(layer.env))
		if err != nil {
			t.Fatal(err)
		}
		if c.Store != url || !c.StorePostgres() {
			t.Fatalf("store %q from %v", c.Store, c.Source("store"))
		}
		var b bytes.Buffer
		if err := c.Render(&b); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), "hunter2secret") || !strings.Contains(b.String(), "db.example") {
			t.Fatalf("rendered configuration shows the password, or no store:\n%s", b.String())
		}
	}
	for _, bad := range []string{"", "mysql://x@y/z", "/var/lib/qpc/other.db", "postgres://u:hunter2secret@h:badport/db", "postgres://h:badport/db?password=hunter2secret"} {
		_, err := Load(Flags{"data_dir": dataDir(t, ""), "store": bad}, mapEnv(nil))
		if err == nil {
			t.Errorf("store %q accepted", bad)
			continue
		}
		if !strings.Contains(err.Error(), "store from flag --store") || strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("store %q: %v", bad, err)
		}
	}
}

// TestRedactStore: a password in the store URL, as userinfo or as libpq's
// password parameter, never reaches the rendered configuration or an
// error, whether the URL parses or not.
func TestRedactStore(t *testing.T) {
	for _, u := range []string{
		"postgres://qpc:hunter2secret@db/qpc",
		"postgres://qpc@db/qpc?sslmode=require&password=hunter2secret",
		"postgresql://db/qpc?password=hunter2secret",
		"postgres://qpc:hunter2secret@db:badport/qpc",
		"postgres://db:badport/qpc?password=hunter2secret",
	} {
		if got := redactStore(u); strings.Contains(got, "hunter2secret") || !strings.Contains(got, "db") {
			t.Errorf("redactStore(%q) = %q", u, got)
		}
	}
}
