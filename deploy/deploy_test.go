// Package deploy holds no Go code: its tests check the deployment files
// beside them (systemd unit, OpenWrt package, container files, Prometheus
// rules, cross builds) against the server they deploy.
package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"debug/macho"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/server/config"
)

// inCI reports whether this is a run where every tool these tests use is
// installed and must be used: .ci/run and the deploy workflow set
// QPC_CI=1 (plain CI=true is not enough: GitHub's test job has no
// promtool).
func inCI() bool { return os.Getenv("QPC_CI") == "1" }

// tool finds a command; in CI its absence fails the test.
func tool(t *testing.T, name string) (string, bool) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("%s is not installed; .ci/run installs it", name)
		}
		t.Logf("%s not installed here: only the checks that need no tool ran", name)
		return "", false
	}
	return path, true
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var envName = regexp.MustCompile(`\bQPC_[A-Z0-9_]+\b`)

// TestEnvNamesExist: every QPC_* variable the deployment files and the
// operations guide mention is one the server reads, so that a renamed
// setting cannot leave a file setting a variable nobody reads.
func TestEnvNamesExist(t *testing.T) {
	known := map[string]bool{}
	for _, k := range config.Keys() {
		known[config.EnvName(k)] = true
	}
	// Variables of the tools, not of the server.
	for _, v := range []string{"QPC_VERSION", "QPC_GOARM", "QPC_CROSS", "QPC_CI", "QPC_UPDATE_GENERATED", "QPC_MLS_VECTORS", "QPC_CI_LONG", "QPC_CI_FUZZ_BUDGET", "QPC_USER", "QPC_KEYS", "QPC_CONTAINER", "QPC_IMAGE_ARCH", "QPC_IMAGE", "QPC_PODMAN_RUN_ARGS", "QPC_RSS_PHASES", "QPC_RSS_ADDRS", "QPC_RSS_SERVER_FLAGS"} {
		known[v] = true
	}
	// Variables the code reads directly (secrets that are no setting of
	// the table, like the tor control password).
	literal := regexp.MustCompile(`"(QPC_[A-Z0-9_]+)"`)
	for _, dir := range []string{"../cmd/qpc-server", "../server", "../tor"} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, p := range paths {
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range literal.FindAllStringSubmatch(string(raw), -1) {
				known[m[1]] = true
			}
		}
	}
	files := []string{"../docs/operations.md"}
	filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range envName.FindAllString(string(raw), -1) {
			checked++
			if !known[name] {
				t.Errorf("%s mentions %s, which qpc-server does not read", f, name)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d mentions found: the walk missed the files", checked)
	}
}

// unitDirectives parses a systemd unit into key -> values.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		d[k] = append(d[k], v)
	}
	return d
}

func TestSystemdUnit(t *testing.T) {
	const unit = "systemd/qpc-server.service"
	d := unitDirectives(t, unit)
	for k, want := range map[string]string{
		"ExecStart":               "/usr/bin/qpc-server run",
		"KillSignal":              "SIGTERM",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"CapabilityBoundingSet":   "",
		"StateDirectory":          "qpc",
		"StateDirectoryMode":      "0700",
		"MemoryDenyWriteExecute":  "yes",
		"RestrictNamespaces":      "yes",
		"SystemCallArchitectures": "native",
	} {
		if !slices.Contains(d[k], want) {
			t.Errorf("%s: %s=%q missing (have %q)", unit, k, want, d[k])
		}
	}
	if !slices.Contains(d["Environment"], "QPC_DATA_DIR=/var/lib/qpc") {
		t.Errorf("%s: the data directory must be /var/lib/qpc", unit)
	}
	// systemd must wait longer than the drain before SIGKILL.
	stop, err := time.ParseDuration(strings.Join(d["TimeoutStopSec"], ""))
	if err != nil || stop <= config.Default().ShutdownTimeout.Duration {
		t.Errorf("%s: TimeoutStopSec %v must exceed the default shutdown_timeout", unit, d["TimeoutStopSec"])
	}

	sa, ok := tool(t, "systemd-analyze")
	if !ok {
		return
	}
	// verify wants the ExecStart binary to exist: point it at a real
	// executable in a copy of the unit, everything else unchanged.
	raw, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "qpc-server.service")
	if err := os.WriteFile(copyPath, bytes.ReplaceAll(raw, []byte("/usr/bin/qpc-server"), []byte(exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", "--man=no", copyPath)
	out, err := cmd.CombinedOutput()
	// verify also reports problems of other units on the host (and
	// complains about a missing systemd as PID 1 in containers); only
	// lines about this unit count.
	var ours []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "qpc-server.service") {
			ours = append(ours, line)
		}
	}
	if len(ours) > 0 {
		t.Errorf("systemd-analyze verify (%v):\n%s", err, strings.Join(ours, "\n"))
	}
	t.Logf("systemd-analyze verify: %d lines about the unit", len(ours))
}

// TestOpenWrtInitScript runs the init script's functions against the stub
// procd and UCI of openwrt/test.sh, and checks that the script passes
// every key the server reads.
func TestOpenWrtInitScript(t *testing.T) {
	sh, ok := tool(t, "sh")
	if !ok {
		t.Fatal("no sh")
	}
	out := run(t, ".", sh, "openwrt/test.sh")
	if !regexp.MustCompile(`openwrt init: [1-9][0-9]* passed, 0 failed`).MatchString(out) {
		t.Fatalf("openwrt/test.sh:\n%s", out)
	}
	raw, err := os.ReadFile("openwrt/files/qpc-server.init")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^QPC_KEYS="([^"]*)"`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("no QPC_KEYS in the init script")
	}
	var want []string
	for _, k := range config.Keys() {
		if k != "data_dir" {
			want = append(want, k)
		}
	}
	got := strings.Fields(string(m[1]))
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("init script keys %v\nserver keys      %v\n(update QPC_KEYS in openwrt/files/qpc-server.init)", got, want)
	}
}

func TestContainerFiles(t *testing.T) {
	df, err := os.ReadFile("docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FROM scratch", "USER qpc:qpc", "QPC_DATA_DIR=/var/lib/qpc", "COPY --chown=10001:10001 varlib/ /var/lib/", "VOLUME [\"/var/lib/qpc\"]", "STOPSIGNAL SIGTERM"} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// Nothing is pulled: scratch is the only base.
	for _, line := range strings.Split(string(df), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.EqualFold(f[0], "FROM") && f[1] != "scratch" {
			t.Errorf("Dockerfile: %q pulls a base image; the image is built FROM scratch only", line)
		}
	}
	build, err := os.ReadFile("docker/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(build, []byte("deploy/cross.sh")) {
		t.Errorf("build.sh does not build the binary with deploy/cross.sh (CGO_ENABLED=0, static)")
	}
	passwd, err := os.ReadFile("docker/rootfs/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(passwd)); got != "qpc:x:10001:10001:quicprochat server:/var/lib/qpc:/nonexistent" {
		t.Errorf("docker/rootfs/etc/passwd holds %q, want the qpc user (10001) alone", got)
	}
	compose, err := os.ReadFile("docker/compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"qpc-server:", "tor:", "path: .env", "127.0.0.1:9090:9090", "4433:4433/udp", "stop_grace_period"} {
		if !bytes.Contains(compose, []byte(want)) {
			t.Errorf("compose.yml lacks %q", want)
		}
	}
}

func TestPrometheusFiles(t *testing.T) {
	raw, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, alert := range []string{"QpcDown", "QpcNotReady", "QpcServerErrorRate", "QpcStoreCommitSlow", "QpcKTEpochLag", "QpcKTUnwitnessedCheckpoint", "QpcTorNotPublished"} {
		if !bytes.Contains(raw, []byte("alert: "+alert+"\n")) {
			t.Errorf("alerts.yml lacks %s", alert)
		}
	}
	promtool, ok := tool(t, "promtool")
	if !ok {
		return
	}
	// check config also checks the rule files it names (alerts.yml).
	out := run(t, ".", promtool, "check", "config", "prometheus/prometheus.yml")
	out += run(t, ".", promtool, "check", "rules", "prometheus/alerts.yml")
	t.Log(out)
	if !strings.Contains(out, "SUCCESS: 9 rules found") {
		t.Errorf("promtool did not find the 9 rules:\n%s", out)
	}
}

// crossTargets: the default test run builds one 64-bit and one 32-bit
// router target (the 32-bit one exercises the ksf workaround); with
// QPC_CROSS=1, as .ci/run sets, every target of `just cross`.
func crossTargets() []string {
	if os.Getenv("QPC_CROSS") == "1" {
		return nil // cross.sh's full list
	}
	return []string{"linux/arm64", "linux/mipsle"}
}

// TestCrossBuild builds static binaries with deploy/cross.sh and checks
// each is an executable of the right format and architecture.
func TestCrossBuild(t *testing.T) {
	bash, ok := tool(t, "bash")
	if !ok {
		t.Fatal("no bash")
	}
	out := t.TempDir()
	start := time.Now()
	log := run(t, ".", bash, append([]string{"cross.sh", out}, crossTargets()...)...)
	t.Logf("%s(%v)", log, time.Since(start).Round(time.Second))

	want := map[string]func(string) error{
		"linux-amd64":   elfOf(elf.EM_X86_64, elf.ELFCLASS64),
		"linux-arm64":   elfOf(elf.EM_AARCH64, elf.ELFCLASS64),
		"linux-arm":     elfOf(elf.EM_ARM, elf.ELFCLASS32),
		"linux-mipsle":  elfOf(elf.EM_MIPS, elf.ELFCLASS32),
		"linux-mips":    elfOf(elf.EM_MIPS, elf.ELFCLASS32),
		"freebsd-amd64": elfOf(elf.EM_X86_64, elf.ELFCLASS64),
		"darwin-amd64":  machoOf(macho.CpuAmd64),
		"darwin-arm64":  machoOf(macho.CpuArm64),
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	expect := len(want)
	if ts := crossTargets(); ts != nil {
		expect = len(ts)
	}
	if len(entries) != expect {
		t.Fatalf("%d binaries, want %d", len(entries), expect)
	}
	for _, e := range entries {
		target := strings.TrimSuffix(strings.TrimPrefix(e.Name(), "qpc-server-"), ".exe")
		check, ok := want[target]
		if !ok {
			t.Errorf("unexpected output %s", e.Name())
			continue
		}
		if err := check(filepath.Join(out, e.Name())); err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		}
	}
}

func elfOf(m elf.Machine, class elf.Class) func(string) error {
	return func(path string) error {
		f, err := elf.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Machine != m || f.Class != class || f.Type != elf.ET_EXEC {
			return &formatError{got: f.Machine.String() + " " + f.Class.String() + " " + f.Type.String()}
		}
		// Static: no interpreter, so it runs on musl routers and in scratch.
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				return &formatError{got: "dynamically linked"}
			}
		}
		return nil
	}
}

func machoOf(cpu macho.Cpu) func(string) error {
	return func(path string) error {
		f, err := macho.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Cpu != cpu || f.Type != macho.TypeExec {
			return &formatError{got: f.Cpu.String()}
		}
		return nil
	}
}

type formatError struct{ got string }

func (e *formatError) Error() string { return "wrong binary: " + e.got }

// TestDeployNeverRecordsObservations: no packaged configuration turns on
// the lab's observer record (server/observer.go), which writes every
// connection, request and delivery to a file. The init script may list
// the key among those it passes through (QPC_KEYS), and generated
// examples may show it commented out; nothing may set it.
func TestDeployNeverRecordsObservations(t *testing.T) {
	setting := regexp.MustCompile(`(?i)observer[_-]record`)
	checked := 0
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for n, line := range strings.Split(string(raw), "\n") {
			trimmed := strings.TrimSpace(line)
			if !setting.MatchString(trimmed) || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "QPC_KEYS=") {
				continue
			}
			t.Errorf("%s:%d sets the observer record: %s", path, n+1, trimmed)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("checked only %d files under deploy/", checked)
	}
	// The key exists, so the check above looks for the right name.
	if !slices.Contains(config.Keys(), "observer_record") {
		t.Fatal("the server has no observer_record key: update this test")
	}
}
