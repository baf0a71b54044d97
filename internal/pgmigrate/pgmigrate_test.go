package pgmigrate

import (
	"strings"
	"testing"
	"testing/fstest"
)

// TestLoad: files come in version order whatever their listing order;
// misnamed files, gaps and unsafe table names are refused.
func TestLoad(t *testing.T) {
	sql := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	good := fstest.MapFS{
		"m/0002_more.sql":  sql("two"),
		"m/0001_first.sql": sql("one"),
		"m/0003_last.sql":  sql("three"),
	}
	s, err := Load(good, "m", "thing_schema_version")
	if err != nil {
		t.Fatal(err)
	}
	if s.Newest() != 3 || s.list[0].sql != "one" || s.list[2].sql != "three" {
		t.Fatalf("Load = %+v", s.list)
	}
	for _, tc := range []struct {
		name  string
		fsys  fstest.MapFS
		table string
		want  string
	}{
		{"gap", fstest.MapFS{"m/0001_a.sql": sql("a"), "m/0003_c.sql": sql("c")}, "v", "without gaps"},
		{"duplicate", fstest.MapFS{"m/0001_a.sql": sql("a"), "m/0001_b.sql": sql("b")}, "v", "without gaps"},
		{"no number", fstest.MapFS{"m/first.sql": sql("a")}, "v", "NNNN_what.sql"},
		{"zero", fstest.MapFS{"m/0000_a.sql": sql("a")}, "v", "NNNN_what.sql"},
		{"not sql", fstest.MapFS{"m/0001_a.txt": sql("a")}, "v", "NNNN_what.sql"},
		{"table injection", good, "v; DROP TABLE accounts", "plain identifier"},
		{"table upper case", good, "Schema", "plain identifier"},
	} {
		if _, err := Load(tc.fsys, "m", tc.table); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Load error %v, want one saying %q", tc.name, err, tc.want)
		}
	}
}
