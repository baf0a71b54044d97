package qrcode_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/quicprochat/qpc/internal/qrcode"
	"github.com/quicprochat/qpc/internal/qrcode/qrcodetest"
)

func TestRenderDecodes(t *testing.T) {
	pin := "q3Bl5Ugw5dk0BC8tfkNAg-xvcFxmrnF6-2Sz0Jy8Mlg" // 43 chars, base64url
	onion := strings.Repeat("abcdefghijklmnopqrstuvwxyz234567", 2)[:56]
	for _, text := range []string{
		"a",
		"qpc://" + pin + "@127.0.0.1:4433",
		"qpc://" + pin + "@" + onion + ".onion:443",
		"qpc:contact:alice?sn=" + strings.Repeat("0123456789", 6),
		"Grüße, 世界", // UTF-8 survives
		strings.Repeat("x", 1000),
		// Contact strings the test decoder's image detector misjudges
		// (about one in 500; qrcodetest.Decode then reads the module grid).
		"qpc:contact:alice#c638de2741f04e6dfd5b9dcc480bdb0d",
		"qpc:contact:alice#07d24718e113e451edeec9ad7af8ffcb",
		"qpc:contact:alice#d7452492a78196677e88650c356d954e",
	} {
		var buf bytes.Buffer
		if err := qrcode.Render(&buf, text); err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		got, err := qrcodetest.Decode(buf.String())
		if err != nil {
			t.Fatalf("%q: %v\n%s", text, err, buf.String())
		}
		if got != text {
			t.Errorf("decoded %q, want %q", got, text)
		}
	}
}

// TestRenderShape: lines of equal width, a 4-module light quiet zone all
// round, and an onion address fitting an 80×25 terminal.
func TestRenderShape(t *testing.T) {
	text := "qpc://q3Bl5Ugw5dk0BC8tfkNAg-xvcFxmrnF6-2Sz0Jy8Mlg@" + strings.Repeat("a", 56) + ".onion:443"
	var buf bytes.Buffer
	if err := qrcode.Render(&buf, text); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.HasSuffix(out, "\n") {
		t.Fatal("no final newline")
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	width := utf8.RuneCountInString(lines[0])
	if width > 80 || len(lines) > 25 {
		t.Errorf("%d×%d cells, want at most 80×25", width, len(lines))
	}
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n != width {
			t.Errorf("line %d: %d cells, line 1 has %d", i+1, n, width)
		}
	}
	// Quiet zone: the top two lines and the first and last 4 cells of
	// each line are light ("█"); the bottom is 3 light module rows, then
	// "▀" (light over the terminal's background below the code).
	full := strings.Repeat("█", width)
	if lines[0] != full || lines[1] != full {
		t.Errorf("top quiet zone:\n%s\n%s", lines[0], lines[1])
	}
	if lines[len(lines)-2] != full || lines[len(lines)-1] != strings.Repeat("▀", width) {
		t.Errorf("bottom quiet zone:\n%s\n%s", lines[len(lines)-2], lines[len(lines)-1])
	}
	for i, l := range lines[:len(lines)-1] {
		r := []rune(l)
		if string(r[:4]) != "████" || string(r[len(r)-4:]) != "████" {
			t.Errorf("line %d: no 4-cell quiet zone: %q", i+1, l)
		}
	}
}

func TestRenderTooLong(t *testing.T) {
	var buf bytes.Buffer
	if err := qrcode.Render(&buf, strings.Repeat("x", 5000)); err == nil {
		t.Error("no error for 5000 bytes")
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %d bytes on error", buf.Len())
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

func TestRenderWriteError(t *testing.T) {
	w := &failWriter{}
	if err := qrcode.Render(w, "qpc://x@h:1"); err == nil || err.Error() != "disk full" {
		t.Errorf("got %v, want the write error", err)
	}
	if w.n != 1 {
		t.Errorf("%d writes after the first failed one", w.n-1)
	}
}
