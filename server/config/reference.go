package config

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// envValue writes a value the way a flag or QPC_* variable takes it:
// buckets comma-separated, durations as Go durations, the rest as text.
func envValue(v any) string {
	switch v := v.(type) {
	case []int:
		parts := make([]string, len(v))
		for i, n := range v {
			parts[i] = strconv.Itoa(n)
		}
		return strings.Join(parts, ",")
	case Duration:
		return v.String()
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// EnvExample is deploy/docker/.env.example: every QPC_* variable with its
// help and default, commented out. It is generated from the same table
// as the flags and the file, and a test keeps the copy in the tree
// current.
func EnvExample() []byte {
	def := Default()
	var b bytes.Buffer
	b.WriteString(`# qpc-server environment for deploy/docker/compose.yml: copy to .env and
# uncomment what you change. Generated from the server's configuration table
# (config.EnvExample); regenerate with
#   QPC_UPDATE_GENERATED=1 go test ./server -run TestGeneratedFiles
# Precedence: flags > QPC_* environment > <data dir>/qpc-server.toml > defaults.
# The compose file already sets QPC_LISTEN and QPC_ADMIN_LISTEN for the
# container network and QPC_DATA_DIR=/var/lib/qpc.
`)
	for _, f := range configFields {
		fmt.Fprintf(&b, "\n# %s.\n#%s=%s\n", f.help, EnvName(f.key), envValue(f.value(&def)))
	}
	return b.Bytes()
}

// Reference is the configuration table of docs/operations.md, in
// Markdown: one row per key with its variable, flag, default and meaning.
func Reference() []byte {
	def := Default()
	var b bytes.Buffer
	b.WriteString("| key (`qpc-server.toml`) | environment | flag | default | meaning |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, f := range configFields {
		fmt.Fprintf(&b, "| `%s` | `%s` | `--%s` | `%s` | %s |\n",
			f.key, EnvName(f.key), FlagName(f.key), envValue(f.value(&def)), strings.ReplaceAll(f.help, "|", `\|`))
	}
	return b.Bytes()
}
