// Package ppocr runs PaddleOCR's PP-OCR text-line recognizers (the
// CRNN/SVTR "rec" models exported to ONNX: x float32 [N, 3, 48, W] ->
// per-column class probabilities [N, W/8, classes]) and renders text lines to
// feed them, so an adapter's effect on a real third-party model can be shown
// as a changed string.
//
// Classes follow PaddleOCR's CTC label layout: 0 is the CTC blank, then one
// class per line of the dictionary (ppocr_keys_v1.txt), then the space.
package ppocr

import (
	"bufio"
	"context"
	"fmt"
	"image"
	"image/draw"
	"os"
	"strings"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/shira-ort/shira-ort/tensor"
)

// Height is the input height PP-OCR recognizers expect.
const Height = 48

// Runner runs a model; *ort.Session implements it.
type Runner interface {
	Run(ctx context.Context, inputs map[string]*tensor.Tensor) (map[string]*tensor.Tensor, error)
}

// LoadClasses reads a PaddleOCR dictionary (one character per line) and
// returns the class labels: "" (blank), the dictionary, then " ".
func LoadClasses(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ppocr: %w", err)
	}
	defer f.Close()
	classes := []string{""}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		classes = append(classes, strings.TrimRight(sc.Text(), "\r\n"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ppocr: %s: %w", path, err)
	}
	if len(classes) < 2 {
		return nil, fmt.Errorf("ppocr: %s: empty dictionary", path)
	}
	return append(classes, " "), nil
}

// Render draws text in black on white with the 7x13 basic font, scaled by
// 3 to fill Height, and returns it as a normalized [1, 3, Height, W] input
// ((v/255 - 0.5) / 0.5, W a multiple of 8) and the image.
func Render(text string) (*tensor.Tensor, image.Image, error) {
	face := basicfont.Face7x13
	adv := font.MeasureString(face, text).Ceil()
	small := image.NewGray(image.Rect(0, 0, adv+8, 16))
	draw.Draw(small, small.Bounds(), image.White, image.Point{}, draw.Src)
	d := &font.Drawer{Dst: small, Src: image.Black, Face: face, Dot: fixed.P(4, 12)}
	d.DrawString(text)
	const scale = 3
	w := small.Bounds().Dx() * scale
	w = (w + 7) / 8 * 8
	big := image.NewGray(image.Rect(0, 0, w, Height))
	draw.Draw(big, big.Bounds(), image.White, image.Point{}, draw.Src)
	xdraw.BiLinear.Scale(big, image.Rect(0, 0, small.Bounds().Dx()*scale, Height), small, small.Bounds(), draw.Over, nil)
	vals := make([]float32, 3*Height*w)
	for y := 0; y < Height; y++ {
		for x := 0; x < w; x++ {
			v := float32(big.GrayAt(x, y).Y)/255*2 - 1
			for c := 0; c < 3; c++ {
				vals[(c*Height+y)*w+x] = v
			}
		}
	}
	t, err := tensor.FromFloat32([]int64{1, 3, Height, int64(w)}, vals)
	if err != nil {
		return nil, nil, fmt.Errorf("ppocr: %w", err)
	}
	return t, big, nil
}

// Decode is greedy CTC decoding of one line: the most likely class per
// column, repeats collapsed, blanks dropped. probs is [T, len(classes)].
func Decode(probs []float32, classes []string) (string, error) {
	c := len(classes)
	if c == 0 || len(probs)%c != 0 {
		return "", fmt.Errorf("ppocr: %d probabilities are not a multiple of %d classes", len(probs), c)
	}
	var b strings.Builder
	prev := -1
	for t := 0; t < len(probs)/c; t++ {
		row := probs[t*c : (t+1)*c]
		best := 0
		for i, p := range row {
			if p > row[best] {
				best = i
			}
		}
		if best != prev && best != 0 {
			b.WriteString(classes[best])
		}
		prev = best
	}
	return b.String(), nil
}

// Recognize runs the recognizer on one rendered line (input "x", the only
// output) and decodes it; it also returns the raw output bytes.
func Recognize(ctx context.Context, r Runner, x *tensor.Tensor, classes []string) (string, []byte, error) {
	outs, err := r.Run(ctx, map[string]*tensor.Tensor{"x": x})
	if err != nil {
		return "", nil, fmt.Errorf("ppocr: run: %w", err)
	}
	if len(outs) != 1 {
		return "", nil, fmt.Errorf("ppocr: want one output, have %d", len(outs))
	}
	var y *tensor.Tensor
	for _, v := range outs {
		y = v
	}
	if len(y.Shape) != 3 || y.Shape[0] != 1 || y.Shape[2] != int64(len(classes)) {
		return "", nil, fmt.Errorf("ppocr: output shape %v, want [1 T %d]", y.Shape, len(classes))
	}
	p, err := y.AsFloat32()
	if err != nil {
		return "", nil, fmt.Errorf("ppocr: %w", err)
	}
	s, err := Decode(p, classes)
	return s, y.Data, err
}
