package qrcodetest

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"strings"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// Each character cell holds two modules, top and bottom; true is light.
var cells = map[rune][2]bool{
	'█': {true, true},
	'▀': {true, false},
	'▄': {false, true},
	' ': {false, false},
}

// isCodeLine reports whether line is a row of a rendered code: only the
// four cell characters, at least one of them not a space.
func isCodeLine(line string) bool {
	if strings.TrimLeft(line, " ") == "" {
		return false
	}
	for _, r := range line {
		if _, ok := cells[r]; !ok {
			return false
		}
	}
	return true
}

// Find returns the first run of consecutive code lines in out, which may
// hold other text before and after the code.
func Find(out string) (string, error) {
	var code []string
	for _, line := range strings.Split(out, "\n") {
		if isCodeLine(line) {
			code = append(code, line)
		} else if len(code) > 0 {
			break
		}
	}
	if len(code) == 0 {
		return "", errors.New("qrcodetest: no QR code in the output")
	}
	return strings.Join(code, "\n") + "\n", nil
}

// Image turns a rendered code (only code lines, as Find returns) into a
// grayscale image with scale×scale pixels per module.
func Image(rendered string, scale int) (image.Image, error) {
	lines := strings.Split(strings.TrimSuffix(rendered, "\n"), "\n")
	width := -1
	var rows [][]bool
	for i, line := range lines {
		var top, bottom []bool
		for _, r := range line {
			c, ok := cells[r]
			if !ok {
				return nil, fmt.Errorf("qrcodetest: line %d: character %q is not a half block", i+1, r)
			}
			top, bottom = append(top, c[0]), append(bottom, c[1])
		}
		if width >= 0 && len(top) != width {
			return nil, fmt.Errorf("qrcodetest: line %d is %d cells wide, line 1 %d", i+1, len(top), width)
		}
		width = len(top)
		rows = append(rows, top, bottom)
	}
	if width <= 0 {
		return nil, errors.New("qrcodetest: empty code")
	}
	img := image.NewGray(image.Rect(0, 0, width*scale, len(rows)*scale))
	for y, row := range rows {
		for x, light := range row {
			v := color.Gray{Y: 0}
			if light {
				v.Y = 255
			}
			for dy := range scale {
				for dx := range scale {
					img.SetGray(x*scale+dx, y*scale+dy, v)
				}
			}
		}
	}
	return img, nil
}

// Decode finds the code in out (see Find) and returns the text it holds.
func Decode(out string) (string, error) {
	code, err := Find(out)
	if err != nil {
		return "", err
	}
	img, err := Image(code, 4)
	if err != nil {
		return "", err
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", fmt.Errorf("qrcodetest: %w", err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		return "", fmt.Errorf("qrcodetest: decode: %w", err)
	}
	return res.GetText(), nil
}
