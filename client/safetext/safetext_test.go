package safetext

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"hello", "hello"},
		{"", ""},
		{"grüße, 日本語, emoji 😀, ok", "grüße, 日本語, emoji 😀, ok"},
		{"\x1b[2J", "␛[2J"},
		{"\x1b]52;c;cGF3bmVk\x07", "␛]52;c;cGF3bmVk␇"},
		{"ok\r\nALARM kt: forged", "ok␍␊ALARM kt: forged"},
		{"abc\b\b\bxyz", "abc␈␈␈xyz"},
		{"tab\there", "tab␉here"},
		{"del\x7f", "del␡"},
		{"nul\x00", "nul␀"},
		{"c1 csi \u009b2J", "c1 csi \uFFFD2J"},
		{"bad \xff\xfe utf8", "bad \uFFFD\uFFFD utf8"},
		{"rlo \u202Etxt.exe", "rlo \uFFFDtxt.exe"},
		{"isolates \u2066\u2067\u2068\u2069 marks \u200E\u200F\u061C", "isolates \uFFFD\uFFFD\uFFFD\uFFFD marks \uFFFD\uFFFD\uFFFD"},
		{"zero\u200Bwidth\u2060joiner\uFEFFbom\u00ADshy", "zero\uFFFDwidth\uFFFDjoiner\uFFFDbom\uFFFDshy"},
		{"zwj 👩\u200D💻", "zwj 👩\uFFFD💻"},
		{"tags \U000E0041\U000E0042", "tags \uFFFD\uFFFD"},
		{"filler \u3164\u115F", "filler \uFFFD\uFFFD"},
		{"sep \u2028\u2029", "sep \uFFFD\uFFFD"},
		{"nonchar \uFFFE\U0010FFFF", "nonchar \uFFFD\uFFFD"},
		{"ctrl pics ␛ stay", "ctrl pics ␛ stay"},
	} {
		if got := Line(tc.in); got != tc.want {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"two\nlines", "two\nlines"},
		{"crlf\r\nline", "crlf\nline"},
		{"lone\rcr", "lone␍cr"},
		{"cr at end\r", "cr at end␍"},
		{"tab\tstop", "tab    stop"},
		{"zwj 👩\u200D💻 zwnj \u200C", "zwj 👩\u200D💻 zwnj \u200C"},
		{"\x1b[31mred\x1b[0m", "␛[31mred␛[0m"},
		{"rlo \u202E", "rlo \uFFFD"},
	} {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMessage(t *testing.T) {
	got := Message("hi\r\nALARM kt: your keys were replaced\n\x1b[2J", "    ")
	want := "hi\n    ALARM kt: your keys were replaced\n    ␛[2J"
	if got != want {
		t.Errorf("Message = %q, want %q", got, want)
	}
	if got := Message("one line", "    "); got != "one line" {
		t.Errorf("Message(one line) = %q", got)
	}
}

func TestEscapeJSON(t *testing.T) {
	in := "a\x1b[2J\u009b\u202E\U000E0041\u200D\x7f ok ü"
	raw, err := json.Marshal(map[string]string{"text": in})
	if err != nil {
		t.Fatal(err)
	}
	out := EscapeJSON(raw)
	checkSafe(t, string(out), false)
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("escaped JSON does not parse: %v\n%s", err, out)
	}
	if back["text"] != in {
		t.Errorf("value changed: %q, want %q", back["text"], in)
	}
	if !strings.Contains(string(out), `\u202e`) || !strings.Contains(string(out), `\udb40\udc41`) {
		t.Errorf("missing escapes: %s", out)
	}
}

// checkSafe fails unless s is valid UTF-8 with no character a terminal
// acts on or that hides or reorders text (body: "\n", ZWJ and ZWNJ may
// stay).
func checkSafe(t *testing.T, s string, body bool) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("not valid UTF-8: %q", s)
	}
	for i, r := range s {
		if body && (r == '\n' || r == zwj || r == zwnj) {
			continue
		}
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Bidi_Control, r) ||
			r == '\u2028' || r == '\u2029' {
			t.Fatalf("unsafe %U at byte %d of %q", r, i, s)
		}
	}
}

func FuzzText(f *testing.F) {
	for _, s := range []string{
		"", "hello", "\x1b[2J\x1b]52;c;cGF3bmVk\x07", "ok\r\nALARM kt: x", "\u202Eabc\u2066",
		"\xff\xc0\x80", "\u009b31m", "👩\u200D💻\t\r\r\n", "\U000E0041\u3164\uFEFF",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l := Line(s)
		checkSafe(t, l, false)
		if strings.ContainsRune(l, '\n') {
			t.Fatalf("Line kept a line break: %q", l)
		}
		if Line(l) != l {
			t.Fatalf("Line not idempotent: %q -> %q -> %q", s, l, Line(l))
		}
		x := Text(s)
		checkSafe(t, x, true)
		if Text(x) != x {
			t.Fatalf("Text not idempotent: %q -> %q -> %q", s, x, Text(x))
		}
		if strings.Count(x, "\n") != strings.Count(s, "\n") {
			t.Fatalf("Text changed the number of lines: %q -> %q", s, x)
		}
		m := Message(s, "  ")
		checkSafe(t, m, true)
		for _, ln := range strings.Split(m, "\n")[1:] {
			if !strings.HasPrefix(ln, "  ") {
				t.Fatalf("Message line %q not indented in %q", ln, m)
			}
		}
		// Safe text is shown as itself.
		if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !Safe(r) }) && l != s {
			t.Fatalf("Line changed safe text: %q -> %q", s, l)
		}
		raw, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		js := EscapeJSON(raw)
		checkSafe(t, string(js), false)
		var a, b string
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(js, &b); err != nil {
			t.Fatalf("escaped JSON %s does not parse: %v", js, err)
		}
		if a != b {
			t.Fatalf("EscapeJSON changed the value: %q -> %q", a, b)
		}
	})
}
