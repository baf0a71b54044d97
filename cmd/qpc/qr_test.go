package main

import (
	"os"
	"strconv"

	"github.com/quicprochat/qpc/internal/qrcode/qrcodetest"
	"github.com/rogpeppe/go-internal/testscript"
)

// qrdecodeCmd is the script command "qrdecode VAR": VAR = the text of the
// QR code printed in the last stdout, read back by an independent decoder.
func qrdecodeCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: qrdecode VAR")
	}
	text, err := qrcodetest.Decode(ts.ReadFile("stdout"))
	if err != nil {
		ts.Fatalf("no QR code in stdout: %v", err)
	}
	ts.Setenv(args[0], text)
}

// damageCmd is the script command "damage FILE truncate|flip OFFSET":
// cut FILE to OFFSET bytes, or flip the low bit of the byte at OFFSET
// (a negative OFFSET counts from the end).
func damageCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: damage FILE truncate|flip OFFSET")
	}
	path := ts.MkAbs(args[0])
	b, err := os.ReadFile(path)
	ts.Check(err)
	off, err := strconv.Atoi(args[2])
	ts.Check(err)
	if off < 0 {
		off += len(b)
	}
	if off < 0 || off >= len(b) {
		ts.Fatalf("offset %s outside the %d bytes of %s", args[2], len(b), args[0])
	}
	switch args[1] {
	case "truncate":
		b = b[:off]
	case "flip":
		b[off] ^= 1
	default:
		ts.Fatalf("usage: damage FILE truncate|flip OFFSET")
	}
	ts.Check(os.WriteFile(path, b, 0o600))
}
