package config

import (
	"strings"
	"testing"
)

// The .env.example values must be accepted as they stand: uncommenting a
// line must never break a server.
func TestEnvExampleValuesLoad(t *testing.T) {
	env := map[string]string{}
	for line := range strings.SplitSeq(string(EnvExample()), "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(line, "#"), "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	if len(env) != len(Keys()) {
		t.Fatalf("%d variables for %d keys", len(env), len(Keys()))
	}
	env[EnvName("data_dir")] = t.TempDir()
	cfg, err := Load(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	for _, f := range configFields {
		if f.key == "data_dir" {
			continue
		}
		if got, want := renderValue(f.value(cfg)), renderValue(f.value(&def)); got != want {
			t.Errorf("%s: %s from the example, default %s", f.key, got, want)
		}
		if cfg.Source(f.key).Kind != FromEnv {
			t.Errorf("%s not read from the environment", f.key)
		}
	}
}
