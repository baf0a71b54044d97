package qrcode

import (
	"fmt"
	"io"

	"github.com/mdp/qrterminal/v3"
	"rsc.io/qr"
)

// level is the error correction level. L recovers about 7% of the
// modules: a screen is not a crumpled label, and the smaller code keeps an
// onion address (117 bytes) at version 6, 41×41 modules, 25 lines with the
// quiet zone.
const level = qr.L

// quietZone is the light margin in modules, as ISO/IEC 18004 asks.
const quietZone = 4

// Render writes text as a QR code drawn with half blocks, one line per two
// module rows, each line ending in "\n". It fails, writing nothing, if
// text does not fit a QR code (2,953 bytes at level L), and returns
// the first write error.
func Render(w io.Writer, text string) error {
	// qrterminal drops the encoder's error and would then dereference a
	// nil code: check first.
	if _, err := qr.Encode(text, level); err != nil {
		return fmt.Errorf("qrcode: %d bytes do not fit a QR code: %w", len(text), err)
	}
	ew := &errWriter{w: w}
	qrterminal.GenerateWithConfig(text, qrterminal.Config{
		Level:          level,
		Writer:         ew,
		HalfBlocks:     true,
		BlackChar:      qrterminal.BLACK_BLACK,
		BlackWhiteChar: qrterminal.BLACK_WHITE,
		WhiteChar:      qrterminal.WHITE_WHITE,
		WhiteBlackChar: qrterminal.WHITE_BLACK,
		QuietZone:      quietZone,
	})
	return ew.err
}

// errWriter keeps the first write error (qrterminal ignores them) and
// writes nothing after it.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}
