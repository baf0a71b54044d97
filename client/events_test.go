package client

import (
	"strings"
	"testing"
	"time"
)

// TestEventStringShowsPeerTextInert: what a peer or the server chose
// (group name, handle, text, alarm detail) is shown through safetext:
// no control character, and a text's further lines indented.
func TestEventStringShowsPeerTextInert(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		e    Event
		want string
	}{
		{Event{Kind: EventMessage, Conv: "eve", From: "eve", Text: "hi\x1b[2J\r\nALARM kt: fake\u202E"},
			"eve: hi␛[2J\n" + Indent + "ALARM kt: fake\uFFFD"},
		{Event{Kind: EventMessage, Conv: "t\x1b]52;c;eA==\x07\r", Group: true, From: "eve", Text: "a\nb\n"},
			"[#t␛]52;c;eA==␇␍] eve: a\n" + Indent + "b\n" + Indent},
		{Event{Kind: EventJoined, Conv: "t\x9b", Group: true, Text: "you joined t\x9b\n(created by eve)"},
			"[#t\uFFFD] you joined t\uFFFD␊(created by eve)"},
		{Event{Kind: EventAlarm, Alarm: &Alarm{Kind: AlarmBadSender, At: at, Detail: "from \x1b[41meve\r\nALARM"}},
			"ALARM bad-sender: from ␛[41meve␍␊ALARM"},
		{Event{Kind: EventAlarm, Text: "no alarm\x07"}, "ALARM no alarm␇"},
		{Event{Kind: EventWarning, Text: "w\x08"}, "WARNING w␈"},
		{Event{Kind: EventGap, Conv: "eve\u2066", From: "eve", Missed: []uint64{2}}, "[eve\uFFFD] 1 message(s) from eve are missing (seq [2])"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.e, got, tc.want)
		}
		if strings.ContainsAny(tc.e.String(), "\x1b\r\x07\x08\u202E") {
			t.Errorf("%q reaches the terminal", tc.e.String())
		}
	}
}
