package report

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGenerateTiny runs the whole report at toy sizes into a temporary
// directory and checks that the markdown and every plot are there and
// real.
func TestGenerateTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every benchmark once, with a real server")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	r, err := Generate(ctx, Config{
		OutDir:     dir,
		DSDuration: 500 * time.Millisecond,
		DSSenders:  4,
		KTLabels:   300,
		MLSSizes:   []int{2, 4},
		BenchTime:  "3x",
		Rounds:     2,
		Command:    "go test ./internal/bench/report",
		Progress:   &progress,
	})
	if err != nil {
		t.Fatalf("generate: %v\n%s", err, progress.String())
	}
	if r.DS.Messages == 0 || r.DS.BaselineMessages == 0 || len(r.Latencies.QPC) != r.DS.Messages {
		t.Errorf("DS: %d qpc and %d baseline messages, %d latencies", r.DS.Messages, r.DS.BaselineMessages, len(r.Latencies.QPC))
	}
	// The stages of a send are parts of the whole call, as bench.Run has them.
	if ds := r.DS; ds.MeanSendMs <= 0 || ds.BaselineMeanSendMs <= 0 || ds.StoreTxnMs <= 0 || ds.StorePagesPerOp <= 0 ||
		ds.StoreQueuedMs+ds.StoreTxnMs+ds.StoreWakeMs >= ds.MeanSendMs {
		t.Errorf("DS send stages: %+v", ds)
	}
	if len(r.Figures) != 7 {
		t.Errorf("%d figures, want 7 (2 sealed, 3 tokens, 2 OPAQUE)", len(r.Figures))
	}
	for _, f := range r.Figures {
		if f.Subject.NsPerOp <= 0 || f.Baseline.NsPerOp <= 0 || f.Ratio() <= 0 {
			t.Errorf("%s: %v ns/op against %v: no ratio", f.Subject.Name, f.Subject.NsPerOp, f.Baseline.NsPerOp)
		}
	}
	if r.KT.Labels != 300 || r.KT.ProofBytes <= 0 || r.KT.Prove.NsPerOp <= 0 || r.KT.Verify.NsPerOp <= 0 {
		t.Errorf("KT: %+v", r.KT)
	}
	if len(r.MLS) != 2 || r.MLS[1].Members != 4 || r.MLS[1].Create.NsPerOp <= 0 || r.MLS[1].Process.NsPerOp <= 0 {
		t.Errorf("MLS: %+v", r.MLS)
	}

	md, err := os.ReadFile(filepath.Join(dir, Markdown))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# Benchmarks", "## Machine", "go test ./internal/bench/report", "Read the ratios",
		"## Delivery service", "## Sealed envelope", "## Delivery tokens", "## OPAQUE login",
		"## Key transparency at 300 labels", "## MLS commit cost by group size",
		"(bench/" + PlotLatency + ")", "(bench/" + PlotMLS + ")", "(bench/" + PlotRatios + ")",
		"sealed.Seal", "Issuer.Redeem", "Ed25519 sign", "HPKE X-Wing seal",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmarks.md lacks %q", want)
		}
	}
	if strings.Contains(string(md), "%!") {
		t.Errorf("benchmarks.md has a formatting error:\n%s", md)
	}
	for _, name := range []string{PlotLatency, PlotMLS, PlotRatios} {
		p := filepath.Join(dir, DefaultPlotDir, name)
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) < 5_000 {
			t.Errorf("%s is %d bytes: too small to hold a plot", name, len(raw))
		}
		img, err := png.Decode(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b := img.Bounds()
		if b.Dx() < 300 || b.Dy() < 200 {
			t.Errorf("%s is %dx%d", name, b.Dx(), b.Dy())
		}
		// Not blank: a plot has many colours (lines, text antialiasing).
		colours := map[uint32]bool{}
		for y := b.Min.Y; y < b.Max.Y; y += 3 {
			for x := b.Min.X; x < b.Max.X; x += 3 {
				r, g, bl, _ := img.At(x, y).RGBA()
				colours[r>>8<<16|g>>8<<8|bl>>8] = true
			}
		}
		if len(colours) < 5 {
			t.Errorf("%s has %d colours: blank", name, len(colours))
		}
	}
}
