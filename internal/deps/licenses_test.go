package deps

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// allowed are the licenses CONTRIBUTING.md permits. MPL-2.0 is file-level
// copyleft: fine to link unmodified, and we never patch dependencies.
var allowed = map[string]bool{
	"Apache-2.0": true, "MIT": true, "BSD-2-Clause": true, "BSD-3-Clause": true, "ISC": true, "MPL-2.0": true,
}

// reviewed are modules whose license file the classifier cannot place,
// read by a person and judged permissive, each for one exact version (an
// upgrade must be read again) and with where it is linked. CONTRIBUTING.md,
// Dependencies, "Reviewed exceptions", says the same.
var reviewed = map[string]string{
	// gonum.org/v1/plot's SVG backend, linked only into qpc-bench and qpc-lab
	// (plots of their reports): CC-BY-4.0, attribution only.
	"github.com/ajstarks/svgo@v0.0.0-20211024235047-1546f124cd8b": "CC-BY-4.0",
	// gonum.org/v1/plot's font rasteriser, qpc-bench and qpc-lab only: dual FreeType
	// License (BSD-style with a credit clause) or GPLv2+; we take the FTL.
	"github.com/golang/freetype@v0.0.0-20170609003504-e2365dfdc4a0": "FTL",
	// bubbletea's input decoding (qpc chat): MIT, stated in its README; the
	// repository has no LICENSE file.
	"github.com/mattn/go-localereader@v0.0.1": "MIT (README)",
}

// classify names the license of a license text, or "" if unknown. The
// markers are the operative sentences of each license, which every copy
// keeps whatever its header or copyright lines.
func classify(text string) string {
	t := strings.Join(strings.Fields(text), " ")
	has := func(s string) bool { return strings.Contains(t, s) }
	switch {
	case has("Apache License") && has("Version 2.0"):
		return "Apache-2.0"
	case has("Mozilla Public License Version 2.0") || has("Mozilla Public License, version 2.0"):
		return "MPL-2.0"
	case has("GNU GENERAL PUBLIC LICENSE") || has("GNU LESSER GENERAL PUBLIC LICENSE") || has("GNU AFFERO"):
		return "GPL-family"
	case has("Permission is hereby granted, free of charge, to any person obtaining a copy"):
		return "MIT"
	case has("Permission to use, copy, modify, and/or distribute this software for any purpose with or without fee is hereby granted") ||
		has("Permission to use, copy, modify, and distribute this software for any purpose with or without fee is hereby granted"):
		return "ISC"
	case has("Redistribution and use in source and binary forms, with or without modification, are permitted"):
		if has("Neither the name") || has("names of its contributors") || has("name of the copyright holder") {
			return "BSD-3-Clause"
		}
		return "BSD-2-Clause"
	}
	return ""
}

func TestClassify(t *testing.T) {
	for text, want := range map[string]string{
		"Apache License\n Version 2.0, January 2004":                                                                                      "Apache-2.0",
		"Permission is hereby granted, free of charge, to any person obtaining a copy\nof this software":                                  "MIT",
		"Redistribution and use in source and binary forms, with or\n without modification, are permitted ... Neither the name of Google": "BSD-3-Clause",
		"Redistribution and use in source and binary forms, with or without modification, are permitted provided":                         "BSD-2-Clause",
		"Mozilla Public License Version 2.0":                                                                                              "MPL-2.0",
		"GNU GENERAL PUBLIC LICENSE Version 3":                                                                                            "GPL-family",
		"All rights reserved. No permission.":                                                                                             "",
	} {
		if got := classify(text); got != want {
			t.Errorf("classify(%.40q) = %q, want %q", text, got, want)
		}
	}
	if allowed["GPL-family"] || allowed[""] {
		t.Fatal("the allowed list admits copyleft or unknown licenses")
	}
}

// requires lists the module@version lines of go.mod's require blocks.
func requires(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mods []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(strings.SplitN(sc.Text(), "//", 2)[0])
		switch {
		case line == "require (":
			in = true
		case line == ")":
			in = false
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
			fallthrough
		case in && line != "":
			if fs := strings.Fields(line); len(fs) == 2 {
				mods = append(mods, fs[0]+"@"+fs[1])
			}
		}
	}
	if len(mods) == 0 {
		t.Fatal("no requirements found in go.mod")
	}
	return mods
}

var licenseFile = regexp.MustCompile(`(?i)^(LICENSE|LICENCE|COPYING)(\.md|\.txt)?$`)

// TestDependencyLicenses: every module in go.mod has a license file whose
// text is one of the allowed licenses.
func TestDependencyLicenses(t *testing.T) {
	mods := requires(t)
	cmd := exec.Command("go", append([]string{"mod", "download", "-json"}, mods...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	found := map[string]string{}
	for dec.More() {
		var m struct{ Path, Version, Dir, Error string }
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		key := m.Path + "@" + m.Version
		if m.Error != "" || m.Dir == "" {
			t.Errorf("%s: not in the module cache: %s", key, m.Error)
			continue
		}
		entries, err := os.ReadDir(m.Dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			if !e.IsDir() && licenseFile.MatchString(e.Name()) {
				names = append(names, e.Name())
			}
		}
		if lic, ok := reviewed[key]; ok {
			found[key] = lic + " (reviewed)"
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: no LICENSE file", key)
			continue
		}
		sort.Strings(names)
		raw, err := os.ReadFile(filepath.Join(m.Dir, names[0]))
		if err != nil {
			t.Fatal(err)
		}
		lic := classify(string(raw))
		found[key] = lic
		if !allowed[lic] {
			t.Errorf("%s: license %q (%s) is not allowed; see CONTRIBUTING.md, Dependencies", key, lic, names[0])
		}
	}
	if len(found) != len(mods) {
		t.Errorf("checked %d of %d modules", len(found), len(mods))
	}
	for _, k := range sortedKeys(found) {
		t.Logf("%-70s %s", k, found[k])
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestReviewedStayOutOfTheServer: no module admitted by review is linked
// into qpc-server.
func TestReviewedStayOutOfTheServer(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}@{{.Version}}{{end}}", "./cmd/qpc-server")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	linked := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		linked[l] = true
	}
	if len(linked) < 5 {
		t.Fatalf("go list found only %d modules; the check is not working", len(linked))
	}
	for k := range reviewed {
		if linked[k] {
			t.Errorf("%s (admitted by review, not by its license file) is linked into qpc-server", k)
		}
	}
}
