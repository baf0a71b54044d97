// Package qrcode prints QR codes on a terminal, for handing a qpc:// server
// address or a contact string to a phone camera.
//
// Render draws two modules per character cell with the half-block
// characters "▀", "▄", "█" and " ", inside the 4-module quiet zone the QR
// specification asks for, so that a 117-character onion address fits in
// 49 columns and 25 lines. "█" is a light module and " " a dark one: the
// code reads right on the usual light-on-dark terminal and comes out
// inverted on a dark-on-light one, which most phone scanners read too.
//
// The encoding is github.com/mdp/qrterminal/v3 (on rsc.io/qr), error
// correction level L. Subpackage qrcodetest reads a rendered code back into
// text, for tests.
package qrcode
