package arch

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/quicprochat/qpc/"

// pkg is one package of the module as `go list` reports it, with paths
// relative to the module ("server/store").
type pkg struct {
	path        string
	imports     []string // qpc packages the non-test code imports
	testImports []string // qpc packages its tests import (internal and external tests)
	deps        []string // qpc packages the non-test code depends on, transitively
}

// listModule runs go list over the whole module from its root.
func listModule(t *testing.T) []pkg {
	t.Helper()
	const format = `{{.ImportPath}}|{{join .Imports " "}}|{{join .TestImports " "}} {{join .XTestImports " "}}|{{join .Deps " "}}`
	cmd := exec.Command("go", "list", "-f", format, "./...")
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	ours := func(field string) []string {
		var list []string
		for _, p := range strings.Fields(field) {
			if rel, ok := strings.CutPrefix(p, module); ok {
				list = append(list, rel)
			}
		}
		slices.Sort(list)
		return slices.Compact(list)
	}
	var pkgs []pkg
	for line := range strings.Lines(string(out)) {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) != 4 {
			t.Fatalf("go list line %q", line)
		}
		pkgs = append(pkgs, pkg{path: strings.TrimPrefix(f[0], module), imports: ours(f[1]), testImports: ours(f[2]), deps: ours(f[3])})
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; run from the module", len(pkgs))
	}
	return pkgs
}

// in reports whether package p is room or inside it (room/...).
func in(p, room string) bool { return p == room || strings.HasPrefix(p, room+"/") }

// inAny reports whether p is in one of rooms.
func inAny(p string, rooms []string) bool {
	return slices.ContainsFunc(rooms, func(r string) bool { return in(p, r) })
}

// helpers are the internal packages production code may import: small,
// self-contained, no test harness.
var helpers = []string{"internal/secretfile", "internal/ratelimit", "internal/qrcode", "internal/stats", "internal/pgmigrate", "internal/pgtx", "internal/pglease"}

// harnesses are the test harnesses and tools of internal/: only other
// harnesses, tests and commands may import them.
var harnesses = []string{"internal/e2e", "internal/hostile", "internal/bench", "internal/loadtest",
	"internal/crashtest", "internal/tornet", "internal/onion", "internal/litewitness", "internal/deps", "internal/arch", "internal/cluster"}

// rule says what a room may import. A package follows the rule of the
// longest room it is in. allow, when not nil, lists everything of qpc the
// room's code may import (its own subpackages always); deny lists what it
// must not import, from its code or its tests; never lists what it must
// not depend on even transitively. deny and never never forbid the room
// itself (client/protocol denies client, not client/protocol). The rules are docs/architecture.md's
// table; ARCHITECTURE.md in the shared directory is its source.
type rule struct {
	room  string
	allow []string
	deny  []string
	never []string
}

var rules = []rule{
	{room: "padding", allow: []string{}},
	{room: "wire", allow: []string{"padding"}},
	{room: "sealed", allow: []string{"padding", "wire"}},
	{room: "tokens", allow: []string{}},
	{room: "account", allow: []string{"wire"}},
	{room: "mls", allow: []string{}},
	{room: "kt", allow: helpers},
	// The epoch log on PostgreSQL: kt's seam and the PostgreSQL helpers.
	{room: "kt/ktpg/pglog", allow: []string{"kt", "internal/pgmigrate", "internal/pgtx"}},
	{room: "tor", allow: helpers},
	{room: "invite", allow: []string{"kt", "padding", "wire"}},
	// The delivery service never sees a client or an MLS group.
	{room: "server", deny: []string{"client", "mls", "lab", "cmd"}, never: []string{"client", "mls"}},
	// The record of the key set's public fingerprints (docs/adr/0039).
	{room: "server/keyset", allow: []string{"internal/pgmigrate", "internal/pgtx"}},
	// The client SDK never links the server.
	{room: "client", deny: []string{"server", "lab", "cmd"}, never: []string{"server"}},
	// The protocol connection is the SDK's lower layer: it never links
	// the messenger (client) or anything else of client's (docs/adr/0028).
	{room: "client/protocol", allow: append([]string{"account", "kt", "padding", "tokens", "tor", "wire"}, helpers...),
		deny: []string{"client", "server", "lab", "cmd"}, never: []string{"client", "server"}},
	{room: "lab", deny: []string{"cmd"}},
	// Thin mains: the server binary is not a client, the client binary
	// not a server.
	{room: "cmd/qpc-server", deny: []string{"client", "mls"}, never: []string{"client", "mls"}},
	{room: "cmd/qpc", deny: []string{"server"}, never: []string{"server"}},
	// What the load harnesses share (the exactly-once envelope, the
	// bounded log buffer): only the wire's message ID, no client or server.
	{room: "internal/loadtest/loadkit", allow: []string{"wire"}},
}

// ruleOf returns the rule of the longest room p is in, if any.
func ruleOf(p string) (rule, bool) {
	var best rule
	found := false
	for _, r := range rules {
		if in(p, r.room) && (!found || len(r.room) > len(best.room)) {
			best, found = r, true
		}
	}
	return best, found
}

// violations lists the broken rules of pkgs, one line each.
func violations(pkgs []pkg) []string {
	var bad []string
	for _, p := range pkgs {
		// Commands may use the harnesses (qpc-bench runs internal/bench).
		production := !in(p.path, "internal") && !in(p.path, "cmd") || inAny(p.path, helpers)
		for _, imp := range p.imports {
			if production && inAny(imp, harnesses) {
				bad = append(bad, fmt.Sprintf("%s imports the test harness %s", p.path, imp))
			}
		}
		r, ok := ruleOf(p.path)
		if !ok {
			continue
		}
		for _, imp := range p.imports {
			if r.allow != nil && !in(imp, r.room) && !inAny(imp, r.allow) {
				bad = append(bad, fmt.Sprintf("%s imports %s: room %s may import only %v of qpc", p.path, imp, r.room, r.allow))
			}
		}
		for _, imp := range append(slices.Clone(p.imports), p.testImports...) {
			if inAny(imp, r.deny) && !in(imp, r.room) {
				bad = append(bad, fmt.Sprintf("%s (or its tests) imports %s: room %s may not", p.path, imp, r.room))
			}
		}
		for _, dep := range p.deps {
			if inAny(dep, r.never) && !in(dep, r.room) {
				bad = append(bad, fmt.Sprintf("%s depends on %s: room %s may not, even through another package", p.path, dep, r.room))
			}
		}
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}

// TestImportRules fails when a package imports what its room may not.
func TestImportRules(t *testing.T) {
	for _, v := range violations(listModule(t)) {
		t.Error(v)
	}
}

// TestRulesCatchForbiddenImports checks the rules themselves against the
// imports they exist to forbid.
func TestRulesCatchForbiddenImports(t *testing.T) {
	for _, tc := range []struct {
		p    pkg
		want string
	}{
		{pkg{path: "server", imports: []string{"client"}}, "server (or its tests) imports client"},
		{pkg{path: "server/store", testImports: []string{"mls"}}, "server/store (or its tests) imports mls"},
		{pkg{path: "server", deps: []string{"client"}}, "server depends on client"},
		{pkg{path: "client/tui", imports: []string{"server/store"}}, "client/tui (or its tests) imports server/store"},
		{pkg{path: "wire", imports: []string{"sealed"}}, "wire imports sealed"},
		{pkg{path: "sealed", imports: []string{"tokens"}}, "sealed imports tokens"},
		{pkg{path: "kt/witness", imports: []string{"server"}}, "kt/witness imports server"},
		{pkg{path: "tokens", imports: []string{"internal/hostile"}}, "tokens imports the test harness internal/hostile"},
		{pkg{path: "cmd/qpc-server", deps: []string{"client"}}, "cmd/qpc-server depends on client"},
		{pkg{path: "client/protocol", imports: []string{"client/state"}}, "client/protocol (or its tests) imports client/state"},
		{pkg{path: "client/protocol", testImports: []string{"client"}}, "client/protocol (or its tests) imports client"},
		{pkg{path: "client/protocol", deps: []string{"client/content"}}, "client/protocol depends on client/content"},
		{pkg{path: "client/protocol", imports: []string{"sealed"}}, "client/protocol imports sealed"},
		{pkg{path: "internal/loadtest/loadkit", imports: []string{"client/protocol"}}, "internal/loadtest/loadkit imports client/protocol"},
	} {
		got := violations([]pkg{tc.p})
		if !slices.ContainsFunc(got, func(v string) bool { return strings.HasPrefix(v, tc.want) }) {
			t.Errorf("%+v: violations %q, want one starting %q", tc.p, got, tc.want)
		}
	}
	if got := violations([]pkg{{path: "client/protocol", imports: []string{"wire", "kt", "tokens"}, deps: []string{"kt/vrf"}}}); len(got) != 0 {
		t.Errorf("the protocol connection may import wire, kt and tokens: %q", got)
	}
	if got := violations([]pkg{{path: "client", imports: []string{"client/protocol"}}}); len(got) != 0 {
		t.Errorf("the messenger may import the protocol connection: %q", got)
	}
	if got := violations([]pkg{{path: "internal/e2e", imports: []string{"client", "server"}}}); len(got) != 0 {
		t.Errorf("an integration package may import both sides: %q", got)
	}
}

const (
	graphBegin = "<!-- BEGIN IMPORT GRAPH: generated by internal/arch (go list); QPC_UPDATE_GENERATED=1 go test ./internal/arch rewrites it -->\n"
	graphEnd   = "<!-- END IMPORT GRAPH -->"
)

// graph is the import graph of the module's non-test code as Markdown:
// one row per package with the qpc packages it imports directly.
func graph(pkgs []pkg) string {
	var b strings.Builder
	b.WriteString("| package | imports (of qpc) |\n|---|---|\n")
	for _, p := range pkgs {
		if inAny(p.path, harnesses) || p.path == "deploy" {
			continue
		}
		imps := "—"
		if len(p.imports) > 0 {
			imps = "`" + strings.Join(p.imports, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", p.path, imps)
	}
	return b.String()
}

// TestArchitectureGraph keeps the import graph in docs/architecture.md
// current; QPC_UPDATE_GENERATED=1 rewrites it.
func TestArchitectureGraph(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "architecture.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i, j := strings.Index(text, graphBegin), strings.Index(text, graphEnd)
	if i < 0 || j < i {
		t.Fatalf("docs/architecture.md lacks the markers %q ... %q", strings.TrimSpace(graphBegin), graphEnd)
	}
	want := text[:i+len(graphBegin)] + graph(listModule(t)) + text[j:]
	if want == text {
		return
	}
	if os.Getenv("QPC_UPDATE_GENERATED") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", path)
		return
	}
	t.Errorf("%s is out of date: run QPC_UPDATE_GENERATED=1 go test ./internal/arch", path)
}
