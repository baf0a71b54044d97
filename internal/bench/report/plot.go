package report

import (
	"fmt"
	"image/color"
	"math"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

var (
	colorQPC      = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorBaseline = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colorThird    = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
)

const plotW, plotH = 16 * vg.Centimeter, 10 * vg.Centimeter

// cdfPoints is the empirical CDF of sorted latencies in milliseconds,
// thinned to at most max points (the first and last always kept).
func cdfPoints(sorted []time.Duration, max int) plotter.XYs {
	n := len(sorted)
	step := 1
	if n > max {
		step = n / max
	}
	var xys plotter.XYs
	for i := 0; i < n; i += step {
		xys = append(xys, plotter.XY{X: msOf(sorted[i]), Y: float64(i+1) / float64(n)})
	}
	if n > 0 && (n-1)%step != 0 {
		xys = append(xys, plotter.XY{X: msOf(sorted[n-1]), Y: 1})
	}
	return xys
}

func msOf(d time.Duration) float64 {
	ms := float64(d) / float64(time.Millisecond)
	return max(ms, 0.001) // the log axis needs x > 0
}

// latencyPlot writes the CDFs of send-to-delivery latency of the qpc
// and baseline phases, on a log time axis.
func latencyPlot(path string, qpc, baseline []time.Duration) error {
	if len(qpc) == 0 || len(baseline) == 0 {
		return fmt.Errorf("latency plot: %d qpc and %d baseline samples", len(qpc), len(baseline))
	}
	p := plot.New()
	p.Title.Text = "DS send → delivery latency (CDF)"
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of messages delivered"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = logTicks{}
	p.Y.Min, p.Y.Max = 0, 1.2 // room above 1 for the legend
	p.Add(plotter.NewGrid())
	for _, s := range []struct {
		name  string
		data  []time.Duration
		color color.Color
		dash  []vg.Length
	}{
		{fmt.Sprintf("qpc (bbolt, fsync), %d msgs", len(qpc)), qpc, colorQPC, nil},
		{fmt.Sprintf("baseline (in-memory relay), %d msgs", len(baseline)), baseline, colorBaseline, []vg.Length{vg.Points(4), vg.Points(3)}},
	} {
		l, err := plotter.NewLine(cdfPoints(s.data, 2000))
		if err != nil {
			return err
		}
		l.LineStyle.Color, l.LineStyle.Width, l.LineStyle.Dashes = s.color, vg.Points(1.5), s.dash
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	p.Legend.Top, p.Legend.Left = true, true
	return p.Save(plotW, plotH, path)
}

// mlsPlot writes the commit cost (create and process) against group size,
// with the HPKE seal baseline as a flat line, on log-log axes.
func mlsPlot(path string, points []MLSPoint, base Measure) error {
	if len(points) == 0 {
		return fmt.Errorf("mls plot: no points")
	}
	p := plot.New()
	p.Title.Text = "MLS update commit cost vs group size (X-Wing suite)"
	p.X.Label.Text = "members (log scale)"
	p.Y.Label.Text = "ms per op (log scale)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	var sizeTicks []plot.Tick
	for _, pt := range points {
		sizeTicks = append(sizeTicks, plot.Tick{Value: float64(pt.Members), Label: fmt.Sprint(pt.Members)})
	}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.ConstantTicks(sizeTicks), logTicks{}
	p.Add(plotter.NewGrid())
	var create, process, hpkeLine plotter.XYs
	for _, pt := range points {
		create = append(create, plotter.XY{X: float64(pt.Members), Y: pt.Create.NsPerOp / 1e6})
		process = append(process, plotter.XY{X: float64(pt.Members), Y: pt.Process.NsPerOp / 1e6})
		hpkeLine = append(hpkeLine, plotter.XY{X: float64(pt.Members), Y: base.NsPerOp / 1e6})
	}
	for _, s := range []struct {
		name  string
		xys   plotter.XYs
		color color.Color
		dash  []vg.Length
	}{
		{"commit (creator)", create, colorQPC, nil},
		{"process (member)", process, colorThird, nil},
		{"baseline: one HPKE X-Wing seal", hpkeLine, colorBaseline, []vg.Length{vg.Points(4), vg.Points(3)}},
	} {
		l, sc, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return err
		}
		l.LineStyle.Color, l.LineStyle.Width, l.LineStyle.Dashes = s.color, vg.Points(1.5), s.dash
		sc.GlyphStyle.Color = s.color
		p.Add(l, sc)
		p.Legend.Add(s.name, l, sc)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.Padding = vg.Points(4)
	// Room above the highest line for the legend.
	p.Y.Max *= 4
	return p.Save(plotW, plotH, path)
}

// ratioPlot writes every figure's ratio to its baseline as a horizontal
// bar on a log axis.
func ratioPlot(path string, names []string, ratios []float64) error {
	if len(names) == 0 || len(names) != len(ratios) {
		return fmt.Errorf("ratio plot: %d names, %d ratios", len(names), len(ratios))
	}
	p := plot.New()
	p.Title.Text = "Cost relative to each figure's baseline (same run)"
	p.X.Label.Text = "ratio (log scale; 1 = as fast as the baseline)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = logTicks{}
	var xys plotter.XYs
	for i, r := range ratios {
		xys = append(xys, plotter.XY{X: max(r, 1e-3), Y: float64(i)})
	}
	// Bars on a log axis have no zero to start from: draw each as a
	// line from 1 (the baseline) to its ratio, with a point at the end.
	for _, xy := range xys {
		l, err := plotter.NewLine(plotter.XYs{{X: 1, Y: xy.Y}, xy})
		if err != nil {
			return err
		}
		l.LineStyle.Color, l.LineStyle.Width = colorQPC, vg.Points(6)
		p.Add(l)
	}
	sc, err := plotter.NewScatter(xys)
	if err != nil {
		return err
	}
	sc.GlyphStyle.Color, sc.GlyphStyle.Radius = colorBaseline, vg.Points(3)
	p.Add(sc)
	p.NominalY(names...)
	p.Add(plotter.NewGrid())
	h := vg.Length(len(names))*0.7*vg.Centimeter + 4*vg.Centimeter
	return p.Save(22*vg.Centimeter, h, path)
}

// logTicks marks a log axis at 1, 2 and 5 times each power of ten, with
// labels, so that a range of less than a decade still has labelled ticks;
// plot.LogTicks labels only powers of ten.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= lo {
		return nil
	}
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		pow := math.Pow(10, e)
		for _, m := range []float64{1, 2, 3, 4, 5, 6, 7, 8, 9} {
			v := m * pow
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
