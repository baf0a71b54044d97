// Package qrcodetest reads a QR code printed by qrcode.Render back into
// its text, for tests: it maps the half-block characters to modules,
// scales them into an image and decodes that with
// github.com/makiuchi-d/gozxing, an independent QR decoder. Import it from
// tests only.
package qrcodetest
