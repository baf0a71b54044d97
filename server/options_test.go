package server

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/wire"
)

// noEnv is a lookupEnv with nothing set, so tests never see the real
// environment.
func noEnv(string) (string, bool) { return "", false }

// configDir returns a fresh data directory holding file as qpc-server.toml.
func configDir(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, config.FileName), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestConfigOptions(t *testing.T) {
	dir := configDir(t, "buckets = [1024, 8192, 65536]\nquota_messages = 7\nquota_bytes = 9000\n")
	c, err := config.Load(config.Flags{
		"data_dir": dir, "message_ttl": "2h", "purge_interval": "1m", "max_streams": "9",
		"handshake_timeout": "2s", "idle_timeout": "3s", "request_timeout": "4s", "store_max_batch": "17",
		"key_package_pool": "12",
	}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	so, sto, err := OptionsFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if !so.Policy.Equal(mustPolicy(t, 1024, 8192, 65536)) {
		t.Errorf("policy %v", so.Policy)
	}
	if so.Quota != (store.Quota{MaxMessages: 7, MaxBytes: 9000}) || so.TTL != 2*time.Hour ||
		so.PurgeInterval != time.Minute || so.MaxStreams != 9 || so.HandshakeTimeout != 2*time.Second ||
		so.IdleTimeout != 3*time.Second || so.RequestTimeout != 4*time.Second || so.KeyPackagePool != 12 {
		t.Errorf("server options %+v", so)
	}
	if so.Identity != nil || so.Store != nil || so.Logger != nil {
		t.Error("Options filled fields the caller owns")
	}
	if sto.MaxBatch != 17 || sto.MaxEnvelope != 65536-4-35 { // what a Delivery record carries in the largest bucket
		t.Errorf("store options %+v", sto)
	}
}

func mustPolicy(t *testing.T, sizes ...int) padding.Policy {
	t.Helper()
	p, err := padding.NewPolicy(sizes...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOptionsDefaultsAreConfigDefaults: the defaults are written once, in
// package config. A zero Options and the options of the default
// configuration come out of New's defaults the same, so the server's
// defaults and the configuration's cannot drift apart.
func TestOptionsDefaultsAreConfigDefaults(t *testing.T) {
	def := config.Default()
	fromConfig, _, err := OptionsFromConfig(&def)
	if err != nil {
		t.Fatal(err)
	}
	var zero Options
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, o := range []*Options{&fromConfig, &zero} {
		o.Logger = quiet
		o.setDefaults()
		// Not values: the clock and the logger are functions, and the
		// authorizer is built from them.
		o.Logger, o.Now, o.Authorizer = nil, nil, nil
	}
	if !reflect.DeepEqual(fromConfig, zero) {
		t.Errorf("the default configuration's options differ from the zero Options' defaults:\nconfig %+v\nzero   %+v", fromConfig, zero)
	}
}

// TestConfigBucketRoom: the configuration refuses a largest bucket with no
// room for an envelope beside a Send's fixed fields exactly where New does
// (both ask wire.MaxEnvelope).
func TestConfigBucketRoom(t *testing.T) {
	least := wire.MaxSendOverhead + 1 // one byte of envelope
	load := func(largest int) error {
		_, err := config.Load(config.Flags{"data_dir": t.TempDir(), "buckets": "512," + strconv.Itoa(largest)}, noEnv)
		return err
	}
	if err := load(least); err != nil {
		t.Errorf("largest bucket %d (room for one byte): %v", least, err)
	}
	if err := load(least - 1); err == nil || !strings.Contains(err.Error(), "no room for an envelope") {
		t.Errorf("largest bucket %d (no room): %v", least-1, err)
	}
	p, err := padding.NewPolicy(512, least)
	if err != nil {
		t.Fatal(err)
	}
	if got := wire.MaxEnvelope(p); got != 1 {
		t.Errorf("server's room in bucket %d: %d, want 1", least, got)
	}
}
