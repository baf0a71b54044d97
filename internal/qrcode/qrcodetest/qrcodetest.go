package qrcodetest

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"slices"
	"strings"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/makiuchi-d/gozxing/qrcode/decoder"
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
	rows = dropPadding(rows)
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
// It first reads it as a scanner would, from an image, through gozxing's
// finder-pattern detector. That detector is made for photographs: on a
// synthetic code it misjudges the module size of about one code in 500
// of a contact string's length ("NotFoundException: dimension = 27"),
// though the code is correct (phones read them). Decode then hands the
// module grid, which the rendering gives exactly, to gozxing's decoder
// directly: format information, masking, error correction and the data
// are still read by the independent decoder, only the geometry is not
// guessed.
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
	res, detectErr := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if detectErr == nil {
		return res.GetText(), nil
	}
	dr, err := decoder.NewDecoder().DecodeBoolMapWithoutHint(darkModules(code))
	if err != nil {
		return "", fmt.Errorf("qrcodetest: decode: %w (from the image: %v)", err, detectErr)
	}
	return dr.GetText(), nil
}

// darkModules returns the rendered code's modules (true: dark), cropped
// to the dark ones' bounding box, which the finder patterns make exactly
// the code without its quiet zone.
func darkModules(code string) [][]bool {
	var rows [][]bool
	for _, line := range strings.Split(strings.TrimSuffix(code, "\n"), "\n") {
		var top, bottom []bool
		for _, r := range line {
			c := cells[r]
			top, bottom = append(top, c[0]), append(bottom, c[1])
		}
		rows = append(rows, top, bottom)
	}
	rows = invert(dropPadding(rows))
	minX, minY, maxX, maxY := -1, -1, -1, -1
	for y, row := range rows {
		for x, dark := range row {
			if !dark {
				continue
			}
			if minX < 0 || x < minX {
				minX = x
			}
			if minY < 0 {
				minY = y
			}
			maxX, maxY = max(maxX, x), y
		}
	}
	if minX < 0 {
		return nil
	}
	out := make([][]bool, 0, maxY-minY+1)
	for _, row := range rows[minY : maxY+1] {
		out = append(out, row[minX:maxX+1])
	}
	return out
}

// dropPadding drops a last row of nothing but dark modules (true is
// light): a code of an odd number of rows ends in a line whose bottom
// halves are the terminal's background, not part of the code or its
// quiet zone. Left in, it is a dark bar three modules under the code.
func dropPadding(rows [][]bool) [][]bool {
	if n := len(rows); n > 0 && !slices.Contains(rows[n-1], true) {
		return rows[:n-1]
	}
	return rows
}

// invert turns light modules (true) into dark ones (true).
func invert(rows [][]bool) [][]bool {
	out := make([][]bool, len(rows))
	for i, row := range rows {
		out[i] = make([]bool, len(row))
		for j, light := range row {
			out[i][j] = !light
		}
	}
	return out
}
