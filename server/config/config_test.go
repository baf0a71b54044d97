package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/padding"
)

// mapEnv is a lookupEnv over a fixed map, so tests never see the real
// environment.
func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// dataDir returns a fresh data directory holding file as qpc-server.toml
// (no file if empty).
func dataDir(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	if file != "" {
		if err := os.WriteFile(filepath.Join(dir, FileName), []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestConfigDefaults(t *testing.T) {
	dir := dataDir(t, "")
	c, err := Load(Flags{"data_dir": dir}, mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.DataDir = dir
	if got := *c; !configEqual(got, want) {
		t.Errorf("config = %+v, want %+v", got, want)
	}
	for _, key := range Keys() {
		wantKind := FromDefault
		if key == "data_dir" {
			wantKind = FromFlag
		}
		if got := c.Source(key).Kind; got != wantKind {
			t.Errorf("source of %s = %v, want %v", key, c.Source(key), wantKind)
		}
	}
	// The brief's defaults, spelt out rather than read back from the code
	// under test.
	if c.Listen != "127.0.0.1:4433" || c.LogLevel != "info" || c.LogFormat != "text" ||
		!slices.Equal(c.Buckets, padding.Default.Buckets()) || c.QuotaMessages != 10000 ||
		c.QuotaBytes != 256<<20 || c.MessageTTL.Duration != 21*24*time.Hour || c.MailboxTTL.Duration != 90*24*time.Hour ||
		c.PurgeInterval.Duration != 10*time.Minute || c.MaxStreams != 100 ||
		c.HandshakeTimeout.Duration != 10*time.Second || c.IdleTimeout.Duration != 60*time.Second ||
		c.RequestTimeout.Duration != 30*time.Second || c.ShutdownTimeout.Duration != 10*time.Second ||
		c.StoreMaxBatch != 256 || c.KeyPackagePool != 100 {
		t.Errorf("defaults differ from the documented ones: %+v", c)
	}
	if d := Default(); d.DataDir != "./qpc-data" {
		t.Errorf("default data dir %q", d.DataDir)
	}
}

// configEqual compares the values of two configs, not their sources.
func configEqual(a, b Config) bool {
	return slices.Equal(a.Buckets, b.Buckets) &&
		a.Listen == b.Listen && a.DataDir == b.DataDir && a.LogLevel == b.LogLevel &&
		a.LogFormat == b.LogFormat && a.QuotaMessages == b.QuotaMessages &&
		a.QuotaBytes == b.QuotaBytes && a.MessageTTL == b.MessageTTL && a.MailboxTTL == b.MailboxTTL &&
		a.PurgeInterval == b.PurgeInterval && a.MaxStreams == b.MaxStreams &&
		a.HandshakeTimeout == b.HandshakeTimeout && a.IdleTimeout == b.IdleTimeout &&
		a.RequestTimeout == b.RequestTimeout && a.ShutdownTimeout == b.ShutdownTimeout &&
		a.StoreMaxBatch == b.StoreMaxBatch
}

// TestConfigPrecedence checks defaults < file < env < flags for several
// fields of different types.
func TestConfigPrecedence(t *testing.T) {
	type layer struct{ file, env, flag string } // "" = not given in that layer
	tests := []struct {
		key      string
		given    layer
		want     func(c *Config) bool
		wantFrom SourceKind
	}{
		{"listen", layer{}, func(c *Config) bool { return c.Listen == "127.0.0.1:4433" }, FromDefault},
		{"listen", layer{file: `"127.0.0.1:1001"`}, func(c *Config) bool { return c.Listen == "127.0.0.1:1001" }, FromFile},
		{"listen", layer{file: `"127.0.0.1:1001"`, env: "127.0.0.1:1002"}, func(c *Config) bool { return c.Listen == "127.0.0.1:1002" }, FromEnv},
		{"listen", layer{file: `"127.0.0.1:1001"`, env: "127.0.0.1:1002", flag: "127.0.0.1:1003"}, func(c *Config) bool { return c.Listen == "127.0.0.1:1003" }, FromFlag},
		{"listen", layer{flag: "127.0.0.1:1003"}, func(c *Config) bool { return c.Listen == "127.0.0.1:1003" }, FromFlag},

		{"quota_messages", layer{file: "11"}, func(c *Config) bool { return c.QuotaMessages == 11 }, FromFile},
		{"quota_messages", layer{file: "11", env: "12"}, func(c *Config) bool { return c.QuotaMessages == 12 }, FromEnv},
		{"quota_messages", layer{env: "12", flag: "13"}, func(c *Config) bool { return c.QuotaMessages == 13 }, FromFlag},

		{"message_ttl", layer{file: `"48h"`}, func(c *Config) bool { return c.MessageTTL.Duration == 48*time.Hour }, FromFile},
		{"message_ttl", layer{file: `"48h"`, env: "72h"}, func(c *Config) bool { return c.MessageTTL.Duration == 72*time.Hour }, FromEnv},
		{"message_ttl", layer{file: `"48h"`, env: "72h", flag: "1h30m"}, func(c *Config) bool { return c.MessageTTL.Duration == 90*time.Minute }, FromFlag},

		{"buckets", layer{file: "[1024, 8192]"}, func(c *Config) bool { return slices.Equal(c.Buckets, []int{1024, 8192}) }, FromFile},
		{"buckets", layer{file: "[1024, 8192]", env: "512, 65536"}, func(c *Config) bool { return slices.Equal(c.Buckets, []int{512, 65536}) }, FromEnv},
		{"buckets", layer{file: "[1024, 8192]", env: "512,65536", flag: "4096,16384,32768"}, func(c *Config) bool { return slices.Equal(c.Buckets, []int{4096, 16384, 32768}) }, FromFlag},

		{"log_level", layer{file: `"DEBUG"`}, func(c *Config) bool { return c.LogLevel == "debug" }, FromFile},
		{"log_level", layer{file: `"debug"`, env: "warn"}, func(c *Config) bool { return c.LogLevel == "warn" }, FromEnv},
		{"log_level", layer{env: "warn", flag: "error"}, func(c *Config) bool { return c.LogLevel == "error" }, FromFlag},

		{"shutdown_timeout", layer{file: `"3s"`, flag: "250ms"}, func(c *Config) bool { return c.ShutdownTimeout.Duration == 250*time.Millisecond }, FromFlag},
		{"store_max_batch", layer{file: "64", env: "32"}, func(c *Config) bool { return c.StoreMaxBatch == 32 }, FromEnv},
		{"quota_bytes", layer{file: "1_000_000"}, func(c *Config) bool { return c.QuotaBytes == 1_000_000 }, FromFile},
		{"key_package_pool", layer{file: "20"}, func(c *Config) bool { return c.KeyPackagePool == 20 }, FromFile},
		{"key_package_pool", layer{file: "20", env: "30"}, func(c *Config) bool { return c.KeyPackagePool == 30 }, FromEnv},
		{"key_package_pool", layer{env: "30", flag: "40"}, func(c *Config) bool { return c.KeyPackagePool == 40 }, FromFlag},
	}
	for _, tt := range tests {
		name := tt.key + "/" + strings.Join([]string{tt.given.file, tt.given.env, tt.given.flag}, "|")
		t.Run(name, func(t *testing.T) {
			file := ""
			if tt.given.file != "" {
				file = tt.key + " = " + tt.given.file + "\n"
			}
			dir := dataDir(t, file)
			env := map[string]string{}
			if tt.given.env != "" {
				env[EnvName(tt.key)] = tt.given.env
			}
			flags := Flags{"data_dir": dir}
			if tt.given.flag != "" {
				flags[tt.key] = tt.given.flag
			}
			c, err := Load(flags, mapEnv(env))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(c) {
				t.Errorf("wrong value: %+v", c)
			}
			src := c.Source(tt.key)
			if src.Kind != tt.wantFrom {
				t.Errorf("source = %v, want kind %v", src, tt.wantFrom)
			}
			wantName := map[SourceKind]string{
				FromFile: filepath.Join(dir, FileName), FromEnv: EnvName(tt.key),
				FromFlag: "--" + FlagName(tt.key), FromDefault: "",
			}[tt.wantFrom]
			if src.Name != wantName {
				t.Errorf("source name = %q, want %q", src.Name, wantName)
			}
		})
	}
}

// TestConfigDataDir: the file read is the one in the data directory the
// flag (else the environment) names.
func TestConfigDataDir(t *testing.T) {
	envDir := dataDir(t, "max_streams = 5\n")
	flagDir := dataDir(t, "max_streams = 6\n")

	c, err := Load(nil, mapEnv(map[string]string{"QPC_DATA_DIR": envDir}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != envDir || c.MaxStreams != 5 || c.Source("data_dir").Kind != FromEnv {
		t.Errorf("env data dir: dir %q (%v), max_streams %d", c.DataDir, c.Source("data_dir"), c.MaxStreams)
	}
	c, err = Load(Flags{"data_dir": flagDir}, mapEnv(map[string]string{"QPC_DATA_DIR": envDir}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != flagDir || c.MaxStreams != 6 || c.Source("data_dir").Kind != FromFlag {
		t.Errorf("flag data dir: dir %q (%v), max_streams %d", c.DataDir, c.Source("data_dir"), c.MaxStreams)
	}
	if c.StorePath() != filepath.Join(flagDir, "qpc.db") || c.FilePath() != filepath.Join(flagDir, "qpc-server.toml") {
		t.Errorf("paths %s, %s", c.StorePath(), c.FilePath())
	}

	// An empty variable counts as unset rather than as an empty value.
	c, err = Load(Flags{"data_dir": flagDir}, mapEnv(map[string]string{"QPC_LISTEN": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:4433" || c.Source("listen").Kind != FromDefault {
		t.Errorf("empty QPC_LISTEN gave %q from %v", c.Listen, c.Source("listen"))
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		env   map[string]string
		flags Flags
		want  []string // all must appear in the error
	}{
		{name: "unknown file key", file: "listen = \"127.0.0.1:1\"\nquota_mesages = 5\n",
			want: []string{`unknown key "quota_mesages"`, "file ", FileName}},
		{name: "unknown table", file: "[server]\nlisten = \"127.0.0.1:1\"\n",
			want: []string{`unknown key "server"`}},
		{name: "data_dir in file", file: "data_dir = \"/elsewhere\"\n",
			want: []string{"data_dir from file", "--data-dir"}},
		{name: "file syntax", file: "listen = \n",
			want: []string{"file ", "line 1"}},
		{name: "file wrong type", file: "quota_messages = \"many\"\n",
			want: []string{"file ", `"quota_messages"`, "incompatible types"}},
		{name: "file integer duration", file: "message_ttl = 30\n",
			want: []string{"file ", `"message_ttl"`, "not a duration"}},
		{name: "file bad buckets", file: "buckets = [2048, 512]\n",
			want: []string{"buckets from file", "ascending"}},
		{name: "file bucket too small for an envelope", file: "buckets = [512, 2048]\n",
			want: []string{"buckets from file", "no room for an envelope"}},
		{name: "bad file value even when overridden", file: "max_streams = 0\n", flags: Flags{"max_streams": "10"},
			want: []string{"max_streams from file", "outside 1..65535"}},
		{name: "key package pool too large for its u16", env: map[string]string{"QPC_KEY_PACKAGE_POOL": "65536"},
			want: []string{"key_package_pool from env QPC_KEY_PACKAGE_POOL", "outside 1..65535"}},
		{name: "key package pool zero", flags: Flags{"key_package_pool": "0"},
			want: []string{"key_package_pool from flag --key-package-pool", "outside 1..65535"}},

		{name: "listen without port", flags: Flags{"listen": "127.0.0.1"},
			want: []string{"listen from flag --listen", "not host:port"}},
		{name: "listen without host", env: map[string]string{"QPC_LISTEN": ":4433"},
			want: []string{"listen from env QPC_LISTEN", "no host"}},
		{name: "listen bad port", flags: Flags{"listen": "127.0.0.1:99999"},
			want: []string{"listen from flag --listen", "no valid port"}},
		{name: "env bad duration", env: map[string]string{"QPC_MESSAGE_TTL": "21d"},
			want: []string{"message_ttl from env QPC_MESSAGE_TTL", `"21d" is not a duration`}},
		{name: "flag negative timeout", flags: Flags{"request_timeout": "-1s"},
			want: []string{"request_timeout from flag --request-timeout", "shorter than"}},
		{name: "purge too often", flags: Flags{"purge_interval": "10ms"},
			want: []string{"purge_interval from flag --purge-interval"}},
		{name: "env bad buckets", env: map[string]string{"QPC_BUCKETS": "512,2k"},
			want: []string{"buckets from env QPC_BUCKETS", "comma-separated"}},
		{name: "flag too many buckets", flags: Flags{"buckets": "512,1024,2048,4096,8192,16384,32768,65536,131072"},
			want: []string{"buckets from flag --buckets", "9 buckets"}},
		{name: "env bad level", env: map[string]string{"QPC_LOG_LEVEL": "verbose"},
			want: []string{"log_level from env QPC_LOG_LEVEL", "verbose"}},
		{name: "flag bad format", flags: Flags{"log_format": "xml"},
			want: []string{"log_format from flag --log-format", "text or json"}},
		{name: "env not an integer", env: map[string]string{"QPC_QUOTA_BYTES": "256MiB"},
			want: []string{"quota_bytes from env QPC_QUOTA_BYTES", "not an integer"}},
		{name: "zero quota", flags: Flags{"quota_messages": "0"},
			want: []string{"quota_messages from flag --quota-messages", "outside"}},
		{name: "quota beyond u32", flags: Flags{"quota_messages": "4294967296"},
			want: []string{"quota_messages from flag --quota-messages", "outside"}},
		{name: "ttl beyond u32 seconds", env: map[string]string{"QPC_MESSAGE_TTL": "1200000h"},
			want: []string{"message_ttl from env QPC_MESSAGE_TTL", "longer than"}},
		{name: "delivery per connection below two largest buckets", flags: Flags{"delivery_conn_bytes": "200000"},
			want: []string{"delivery_conn_bytes from flag --delivery-conn-bytes", "outside 262144.."}},
		{name: "delivery total below per connection", flags: Flags{"delivery_bytes": "1048576"},
			want: []string{"delivery_bytes from flag --delivery-bytes", "outside 2097152.."}},
		{name: "request per connection below the largest bucket", flags: Flags{"request_conn_bytes": "100000"},
			want: []string{"request_conn_bytes from flag --request-conn-bytes", "outside 131072.."}},
		{name: "request total below per connection", flags: Flags{"request_bytes": "1048576"},
			want: []string{"request_bytes from flag --request-bytes", "outside 2097152.."}},
		{name: "zero batch", env: map[string]string{"QPC_STORE_MAX_BATCH": "0"},
			want: []string{"store_max_batch from env QPC_STORE_MAX_BATCH"}},
		{name: "empty data dir flag", flags: Flags{"data_dir": ""},
			want: []string{"data_dir from flag --data-dir", "empty"}},
		{name: "unknown flag key", flags: Flags{"colour": "blue"},
			want: []string{`unknown flag key "colour"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := dataDir(t, tt.file)
			flags := Flags{"data_dir": dir}
			for k, v := range tt.flags {
				flags[k] = v
			}
			c, err := Load(flags, mapEnv(tt.env))
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigValidateNamesSource(t *testing.T) {
	c := Default()
	c.MaxStreams = 0
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "max_streams from default") {
		t.Errorf("Validate = %v", err)
	}
}

// TestConfigRender checks the annotations and that the rendered text is
// itself a valid file giving the same values.
func TestConfigRender(t *testing.T) {
	dir := dataDir(t, "max_streams = 42\nbuckets = [1024, 65536]\n")
	c, err := Load(
		Flags{"data_dir": dir, "message_ttl": "36h"},
		mapEnv(map[string]string{"QPC_QUOTA_MESSAGES": "77", "QPC_LOG_FORMAT": "json"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.Render(&out); err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{} // key -> whole line
	sc := bufio.NewScanner(&out)
	keyRE := regexp.MustCompile(`^(?:# )?([a-z_]+) = `)
	for sc.Scan() {
		if m := keyRE.FindStringSubmatch(sc.Text()); m != nil {
			lines[m[1]] = sc.Text()
		}
	}
	wantLine := map[string]string{
		"message_ttl":    `^message_ttl = "36h" +# from flag$`,
		"quota_messages": `^quota_messages = 77 +# from env QPC_QUOTA_MESSAGES$`,
		"log_format":     `^log_format = "json" +# from env QPC_LOG_FORMAT$`,
		"max_streams":    `^max_streams = 42 +# from file$`,
		"buckets":        `^buckets = \[1024, 65536\] +# from file$`,
		"listen":         `^listen = "127.0.0.1:4433" +# default$`,
		"idle_timeout":   `^idle_timeout = "1m" +# default$`,
		"data_dir":       `^# data_dir = ".+" +# from flag$`,
	}
	for _, key := range Keys() {
		if lines[key] == "" {
			t.Errorf("rendered config lacks %s:\n%s", key, out.String())
		}
	}
	for key, re := range wantLine {
		if !regexp.MustCompile(re).MatchString(lines[key]) {
			t.Errorf("line for %s = %q, want /%s/", key, lines[key], re)
		}
	}

	// Fed back as a file (everything else unset), it reproduces the values.
	var again bytes.Buffer
	c.Render(&again)
	dir2 := dataDir(t, again.String())
	c2, err := Load(Flags{"data_dir": dir2}, mapEnv(nil))
	if err != nil {
		t.Fatalf("rendered config does not load back: %v\n%s", err, again.String())
	}
	c2.DataDir = c.DataDir
	if !configEqual(*c, *c2) {
		t.Errorf("round trip: got %+v, want %+v", c2, c)
	}
	for _, key := range Keys() {
		if want := map[bool]SourceKind{true: FromFlag, false: FromFile}[key == "data_dir"]; c2.Source(key).Kind != want {
			t.Errorf("round trip: %s from %v", key, c2.Source(key))
		}
	}
}

// TestDefaultConfigFile: the file init writes changes nothing as written,
// mentions every key, and uncommented gives exactly the defaults.
func TestDefaultConfigFile(t *testing.T) {
	text := string(DefaultFile())
	dir := dataDir(t, text)
	c, err := Load(Flags{"data_dir": dir}, mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range Keys() {
		if key != "data_dir" && c.Source(key).Kind != FromDefault {
			t.Errorf("commented file set %s", key)
		}
		if key != "data_dir" && !strings.Contains(text, "\n#"+key+" = ") {
			t.Errorf("default file lacks %s", key)
		}
		if key != "data_dir" && !strings.Contains(text, EnvName(key)) {
			t.Errorf("default file does not name %s", EnvName(key))
		}
	}
	uncommented := regexp.MustCompile(`(?m)^#([a-z_]+ = )`).ReplaceAllString(text, "$1")
	dir = dataDir(t, uncommented)
	c, err = Load(Flags{"data_dir": dir}, mapEnv(nil))
	if err != nil {
		t.Fatalf("uncommented default file: %v", err)
	}
	want := Default()
	want.DataDir = dir
	if !configEqual(*c, want) {
		t.Errorf("uncommented default file gives %+v", c)
	}
	for _, key := range Keys() {
		if key != "data_dir" && c.Source(key).Kind != FromFile {
			t.Errorf("uncommented file did not set %s", key)
		}
	}
}

func TestDurationText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		504 * time.Hour: "504h", 10 * time.Minute: "10m", 90 * time.Minute: "1h30m",
		1500 * time.Millisecond: "1.5s", time.Hour + time.Second: "1h0m1s", 60 * time.Second: "1m",
	} {
		b, _ := Duration{d}.MarshalText()
		if string(b) != want {
			t.Errorf("%v marshals to %q, want %q", d, b, want)
		}
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back.Duration != d {
			t.Errorf("%q unmarshals to %v, %v", b, back, err)
		}
	}
}

func TestConfigLogger(t *testing.T) {
	c := Default()
	c.LogFormat = "json"
	var buf bytes.Buffer
	log := c.NewLogger(&buf)
	log.Debug("hidden")
	log.Info("shown", "n", 1)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %q", buf.String())
	}
	if rec["msg"] != "shown" || rec["level"] != "INFO" {
		t.Errorf("record %v", rec)
	}

	c.LogFormat, c.LogLevel = "text", "debug"
	buf.Reset()
	c.NewLogger(&buf).Debug("now shown")
	if !strings.Contains(buf.String(), `level=DEBUG msg="now shown"`) {
		t.Errorf("text debug log %q", buf.String())
	}
}

func TestConfigFlagsRegister(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	flags := Flags{}
	flags.Register(fs)
	if err := fs.Parse([]string{"--listen", "127.0.0.1:9", "--message-ttl=5h", "--store-max-batch", "3"}); err != nil {
		t.Fatal(err)
	}
	want := Flags{"listen": "127.0.0.1:9", "message_ttl": "5h", "store_max_batch": "3"}
	if len(flags) != len(want) {
		t.Errorf("flags %v, want %v", flags, want)
	}
	for k, v := range want {
		if flags[k] != v {
			t.Errorf("flag %s = %q, want %q", k, flags[k], v)
		}
	}
	for _, key := range Keys() {
		f := fs.Lookup(FlagName(key))
		if f == nil {
			t.Errorf("no flag for %s", key)
			continue
		}
		if !strings.Contains(f.Usage, EnvName(key)) {
			t.Errorf("usage of --%s does not name %s", f.Name, EnvName(key))
		}
	}
}
