package deploy

import (
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/quicprochat/qpc/server/config"
)

// composeFile is the part of a compose file the checks read.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Node     map[string]any            `yaml:"x-node"` // the nodes' shared settings (an anchor)
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image            string            `yaml:"image"`
	PullPolicy       string            `yaml:"pull_policy"`
	NetworkMode      string            `yaml:"network_mode"`
	DependsOn        any               `yaml:"depends_on"`
	Environment      map[string]string `yaml:"environment"`
	Ports            []string          `yaml:"ports"`
	Volumes          []string          `yaml:"volumes"`
	ReadOnly         bool              `yaml:"read_only"`
	CapDrop          []string          `yaml:"cap_drop"`
	StopGracePeriod  string            `yaml:"stop_grace_period"`
	Healthcheck      map[string]any    `yaml:"healthcheck"`
	EnvFile          any               `yaml:"env_file"`
	SecurityOpt      []string          `yaml:"security_opt"`
	Restart          string            `yaml:"restart"`
	ExtraUnknownKeys map[string]any    `yaml:",inline"`
}

// composeKeys are the service keys the compose specification defines
// that these files use; anything else is a typo compose would reject or,
// worse, ignore.
var composeKeys = []string{"image", "pull_policy", "network_mode", "depends_on", "environment", "ports", "volumes",
	"read_only", "cap_drop", "stop_grace_period", "healthcheck", "env_file", "security_opt", "restart"}

// TestComposeCluster checks deploy/compose/compose.yml offline: three
// qpc-server nodes on one PostgreSQL store, each with a data volume of its
// own, distinct published ports, the admin listener on the host's loopback
// only, no password in the store URL, the hardening of the single-node
// file, and every QPC_* variable a setting of the server.
func TestComposeCluster(t *testing.T) {
	raw, err := os.ReadFile("compose/compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("compose.yml: %v", err)
	}
	if f.Name == "" {
		t.Error("compose.yml has no project name")
	}
	for k := range f.Node {
		if !slices.Contains(composeKeys, k) {
			t.Errorf("x-node: unknown key %q", k)
		}
	}
	for name, s := range f.Services {
		for k := range s.ExtraUnknownKeys {
			if !slices.Contains(composeKeys, k) {
				t.Errorf("service %s: unknown key %q", name, k)
			}
		}
		for _, v := range s.Volumes {
			vol, _, _ := strings.Cut(v, ":")
			if _, ok := f.Volumes[vol]; !ok {
				t.Errorf("service %s mounts volume %q, which the file does not declare", name, vol)
			}
		}
	}
	if _, ok := f.Services["postgres"]; !ok {
		t.Fatal("no postgres service")
	}
	if pg := f.Services["postgres"]; len(pg.Ports) != 0 {
		t.Errorf("postgres publishes %v: only the nodes may reach it", pg.Ports)
	}
	if _, ok := f.Services["tor"]; !ok {
		t.Error("no tor service")
	}
	known := map[string]bool{}
	for _, k := range config.Keys() {
		known[config.EnvName(k)] = true
	}
	var (
		store      string
		quicPorts  = map[string]string{}
		dataVols   = map[string]string{}
		nodes      int
		viaTor     int
		adminPorts = map[string]string{}
	)
	for _, name := range []string{"qpc-1", "qpc-2", "qpc-3"} {
		s, ok := f.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		nodes++
		if s.Image != "qpc-server" || s.PullPolicy != "never" {
			t.Errorf("%s: image %q pull_policy %q, want the locally built qpc-server, never pulled", name, s.Image, s.PullPolicy)
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") || s.StopGracePeriod == "" {
			t.Errorf("%s: read_only=%v cap_drop=%v security_opt=%v stop_grace_period=%q: want the single-node file's hardening", name, s.ReadOnly, s.CapDrop, s.SecurityOpt, s.StopGracePeriod)
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "QPC_") && !known[k] {
				t.Errorf("%s sets %s, which qpc-server does not read", name, k)
			}
		}
		st := s.Environment["QPC_STORE"]
		u, err := url.Parse(st)
		if err != nil || u.Scheme != "postgres" {
			t.Errorf("%s: QPC_STORE=%q, want a postgres:// URL", name, st)
		} else if _, set := u.User.Password(); set || u.Query().Has("password") {
			t.Errorf("%s: the store URL carries a password; it belongs in PGPASSWORD", name)
		} else if u.Hostname() != "postgres" {
			t.Errorf("%s: the store URL names host %q, not the postgres service", name, u.Hostname())
		}
		if store == "" {
			store = st
		} else if st != store {
			t.Errorf("%s: QPC_STORE=%q, node 1 has %q: the nodes must share one database", name, st, store)
		}
		if _, ok := s.Environment["PGPASSWORD"]; !ok {
			t.Errorf("%s: no PGPASSWORD", name)
		}
		if s.Environment["QPC_DATA_DIR"] != "/var/lib/qpc" {
			t.Errorf("%s: QPC_DATA_DIR=%q, want the image's /var/lib/qpc", name, s.Environment["QPC_DATA_DIR"])
		}
		for _, v := range s.Volumes {
			vol, at, _ := strings.Cut(v, ":")
			at, _, _ = strings.Cut(at, ":")
			if at != "/var/lib/qpc" {
				continue
			}
			if other, dup := dataVols[vol]; dup {
				t.Errorf("%s and %s share the data volume %s: each node needs its own", name, other, vol)
			}
			dataVols[vol] = name
		}
		ports := s.Ports
		if s.NetworkMode != "" {
			// The node shares another service's network namespace, which
			// publishes its ports.
			owner, ok := strings.CutPrefix(s.NetworkMode, "service:")
			if !ok || f.Services[owner].Image == "" {
				t.Errorf("%s: network_mode %q names no service of the file", name, s.NetworkMode)
				continue
			}
			viaTor++
			ports = f.Services[owner].Ports
		}
		for _, p := range ports {
			switch {
			case strings.HasSuffix(p, ":4433/udp"):
				host := strings.TrimSuffix(p, ":4433/udp")
				if other, dup := quicPorts[host]; dup {
					t.Errorf("%s and %s both publish host port %s", name, other, host)
				}
				quicPorts[host] = name
			case strings.HasSuffix(p, ":9090/tcp") || strings.HasSuffix(p, ":9090"):
				if !strings.HasPrefix(p, "127.0.0.1:") {
					t.Errorf("%s publishes the admin listener as %q: only on the host's loopback", name, p)
				}
				if other, dup := adminPorts[p]; dup {
					t.Errorf("%s and %s both publish %s", name, other, p)
				}
				adminPorts[p] = name
			default:
				t.Errorf("%s publishes %q: want QUIC (4433/udp) and the admin listener (9090) only", name, p)
			}
		}
	}
	if nodes != 3 || len(dataVols) != 3 || len(quicPorts) != 3 || len(adminPorts) != 3 {
		t.Errorf("nodes=%d data volumes=%d QUIC ports=%d admin ports=%d, want 3 of each", nodes, len(dataVols), len(quicPorts), len(adminPorts))
	}
	if viaTor != 1 {
		t.Errorf("%d nodes share tor's network namespace, want 1 (the onion service's node)", viaTor)
	}
	script, err := os.ReadFile("compose/share-keys.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tls.key", "opaque.key", "tokens.key", "kt-note.key", "kt-vrf.key"} {
		if !strings.Contains(string(script), k) {
			t.Errorf("share-keys.sh does not copy %s", k)
		}
	}
}
