// Package safetext makes text that came from a peer or the server safe to
// show on a terminal.
//
// A message text, a group name, an alarm's detail or a server's error
// message is data that someone else chose. Printed raw it can drive the
// terminal: ESC starts control sequences (ECMA-48 §5.4) that clear the
// screen, move the cursor over what is shown, set colours that pass for
// this program's own alarm styling, or write the clipboard (OSC 52); a
// carriage return or backspace overwrites the start of the line; a line
// feed starts a line that can pass for a system line such as "ALARM …";
// bidirectional controls (UAX #9 §2) reorder what follows them; zero-width
// characters hide text. The functions here turn every such character into
// something visible and inert, and keep everything else as it is:
//
//   - C0 controls and DEL (category Cc, U+0000–U+001F, U+007F) become their
//     Unicode control pictures (U+2400–U+241F, U+2421): ESC shows as ␛,
//     CR as ␍, BS as ␈, so an attempt is visible as what it was;
//   - C1 controls (U+0080–U+009F, also Cc; a terminal may take U+009B as
//     CSI), invalid UTF-8, noncharacters, every Bidi_Control character
//     (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) and the
//     other invisible format characters (category Cf: zero-width space,
//     word joiner, BOM, soft hyphen, tag characters…, and the Hangul
//     fillers that draw nothing) become U+FFFD �;
//   - line and paragraph separators (U+2028, U+2029) become U+FFFD too.
//
// Line is for what must stay on one line: names, alarm details, error
// messages, status values; a line break in it shows as ␊. Text is for a
// message body: its line breaks (LF or CRLF) stay as "\n", a tab becomes
// spaces, and ZWJ and ZWNJ stay (emoji sequences and several scripts need
// them; they draw nothing and move nothing). Message lays a body out
// under a prefix: every line after the first starts with an indent, so a
// peer cannot start a line of its own. EscapeJSON does the same for
// machine-readable output without changing a value.
//
// The result never contains a byte a terminal acts on, and applying Line
// or Text again changes nothing. Stored data stays as received: this is
// for display only.
package safetext

import (
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Replacement is shown for a character that is not shown as itself and
// has no control picture.
const Replacement = '\uFFFD'

// TabWidth is how many spaces a tab in a message body becomes.
const TabWidth = 4

const (
	zwnj = '\u200C'
	zwj  = '\u200D'
)

// Line returns s safe to show within one line of a terminal: a line
// break shows as ␊.
func Line(s string) string {
	if isClean(s, false) {
		return s
	}
	return clean(s, false)
}

// Text returns a message body safe to show on a terminal. Its line
// breaks (LF, and CRLF as one) stay as "\n", and they are the only
// control characters left; a lone CR shows as ␍. Callers lay the lines
// out (Message does).
func Text(s string) string {
	if isClean(s, true) {
		return s
	}
	return clean(s, true)
}

// Message returns Text(s) with indent at the start of every line after
// the first, so that no line of the body starts where a line of this
// program would. The indent should be non-empty and, to keep the output
// safe, itself safe.
func Message(s, indent string) string {
	t := Text(s)
	if !strings.Contains(t, "\n") {
		return t
	}
	return strings.ReplaceAll(t, "\n", "\n"+indent)
}

// Safe reports whether r is shown as itself by Line.
func Safe(r rune) bool { return keep(r, false) }

// keep reports whether r is shown as itself (body: in a message body,
// where ZWJ and ZWNJ stay; line breaks and tabs are handled by clean).
func keep(r rune, body bool) bool {
	switch {
	case r < 0x20 || r == 0x7f:
		return false
	case r < 0x7f:
		return true
	case r <= 0x9f: // C1
		return false
	case r == utf8.RuneError:
		return true // U+FFFD itself; invalid bytes are caught by the decoder
	case body && (r == zwj || r == zwnj):
		return true
	case r == '\u2028' || r == '\u2029':
		return false
	case unicode.Is(unicode.Bidi_Control, r), unicode.Is(unicode.Cf, r):
		return false
	case invisible(r), unicode.Is(unicode.Noncharacter_Code_Point, r):
		return false
	}
	return true
}

// invisible reports the letters that draw nothing (Hangul fillers, used
// for names that look empty).
func invisible(r rune) bool {
	switch r {
	case '\u115F', '\u1160', '\u3164', '\uFFA0':
		return true
	}
	return false
}

// isClean reports whether clean would return s unchanged.
func isClean(s string, body bool) bool {
	for i := 0; i < len(s); {
		b := s[i]
		if b >= 0x20 && b < 0x7f {
			i++
			continue
		}
		if body && b == '\n' {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return false
		}
		if !keep(r, body) {
			return false
		}
		i += n
	}
	return true
}

func clean(s string, body bool) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteRune(Replacement)
		case body && r == '\n':
			b.WriteByte('\n')
		case body && r == '\r' && i+1 < len(s) && s[i+1] == '\n':
			b.WriteByte('\n')
			n = 2
		case body && r == '\t':
			b.WriteString(strings.Repeat(" ", TabWidth))
		case r < 0x20:
			b.WriteRune(0x2400 + r) // control pictures: ␀ … ␟
		case r == 0x7f:
			b.WriteRune('\u2421') // ␡
		case keep(r, body):
			b.WriteString(s[i : i+n])
		default:
			b.WriteRune(Replacement)
		}
		i += n
	}
	return b.String()
}

// EscapeJSON rewrites JSON text so that every character Line would not
// show as itself is a \u escape (a pair of them beyond U+FFFF, RFC 8259
// §7). The decoded value is unchanged: programs reading the output get
// exactly what was received, and a terminal showing it gets no control.
// Outside strings JSON holds only ASCII, so escaping is done wherever
// such a character is. Invalid UTF-8 is escaped as U+FFFD (encoding/json
// never produces it).
func EscapeJSON(js []byte) []byte {
	out := make([]byte, 0, len(js)+16)
	for i := 0; i < len(js); {
		r, n := utf8.DecodeRune(js[i:])
		switch {
		case r == '\n' || r == '\t' || r == '\r' || r == ' ':
			out = append(out, js[i:i+n]...) // whitespace between tokens
		case r == utf8.RuneError && n <= 1:
			out = appendEscape(out, Replacement)
		case keep(r, false):
			out = append(out, js[i:i+n]...)
		default:
			out = appendEscape(out, r)
		}
		i += n
	}
	return out
}

func appendEscape(out []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	esc := func(u rune) {
		out = append(out, '\\', 'u', hex[u>>12&0xf], hex[u>>8&0xf], hex[u>>4&0xf], hex[u&0xf])
	}
	if r > 0xFFFF {
		hi, lo := utf16.EncodeRune(r)
		esc(hi)
		esc(lo)
		return out
	}
	esc(r)
	return out
}
