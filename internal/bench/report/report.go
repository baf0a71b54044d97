package report

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/quicprochat/qpc/internal/bench"
)

// Config sizes one report run. Zero fields take the defaults of the
// recorded report.
type Config struct {
	// OutDir receives benchmarks.md and, under PlotDir, the PNG plots.
	OutDir string
	// PlotDir is the plots' directory relative to OutDir; default "bench".
	PlotDir string
	// DSDuration is the send window of each DS phase; default 10 s.
	DSDuration time.Duration
	// DSSenders is the DS load's concurrent senders; default 64.
	DSSenders int
	// KTLabels is the size of the KT directory; default 1,000,000.
	KTLabels int
	// MLSSizes are the MLS group sizes; default 2, 8, 32, 128.
	MLSSizes []int
	// BenchTime is testing's benchtime for each micro-benchmark ("1s",
	// "100x") in each round; default "500ms".
	BenchTime string
	// Rounds is how often each micro-benchmark and its baseline run, in
	// turn; each keeps its fastest round. Default 3.
	Rounds int
	// Command is the command line recorded in the report.
	Command string
	// Progress receives a line per step; nil is quiet.
	Progress io.Writer
	// Logger receives the DS run's server and client warnings.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultDSDuration = 10 * time.Second
	DefaultDSSenders  = 64
	DefaultKTLabels   = 1_000_000
	DefaultBenchTime  = "500ms"
	DefaultRounds     = 3
	DefaultPlotDir    = "bench"
)

// DefaultMLSSizes are the MLS group sizes of the recorded report.
var DefaultMLSSizes = []int{2, 8, 32, 128}

// Plot files, relative to the plot directory.
const (
	PlotLatency = "ds_latency.png"
	PlotMLS     = "mls_commit.png"
	PlotRatios  = "ratios.png"
	Markdown    = "benchmarks.md"
)

func (c *Config) setDefaults() {
	if c.OutDir == "" {
		c.OutDir = "docs"
	}
	if c.PlotDir == "" {
		c.PlotDir = DefaultPlotDir
	}
	if c.DSDuration == 0 {
		c.DSDuration = DefaultDSDuration
	}
	if c.DSSenders == 0 {
		c.DSSenders = DefaultDSSenders
	}
	if c.KTLabels == 0 {
		c.KTLabels = DefaultKTLabels
	}
	if len(c.MLSSizes) == 0 {
		c.MLSSizes = DefaultMLSSizes
	}
	if c.BenchTime == "" {
		c.BenchTime = DefaultBenchTime
	}
	if c.Rounds == 0 {
		c.Rounds = DefaultRounds
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Report is everything one run measured.
type Report struct {
	Machine   Machine
	Started   time.Time
	Took      time.Duration
	DS        bench.Result
	Latencies bench.Latencies
	Figures   []Figure // sealed, tokens, opaque
	KT        KTResult
	MLS       []MLSPoint
	MLSBase   Measure
	Steps     []Step // how long each part took
}

// Step is the wall time of one part of the run.
type Step struct {
	Name string
	Took time.Duration
}

// Generate runs the whole set and writes OutDir/benchmarks.md and the
// plots. It returns the report it wrote.
func Generate(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := setBenchTime(cfg.BenchTime); err != nil {
		return nil, fmt.Errorf("benchtime %q: %w", cfg.BenchTime, err)
	}
	plotDir := filepath.Join(cfg.OutDir, cfg.PlotDir)
	if err := os.MkdirAll(plotDir, 0o755); err != nil {
		return nil, err
	}
	r := &Report{Machine: describeMachine(), Started: time.Now()}
	step := func(name string, f func() error) error {
		fmt.Fprintf(cfg.Progress, "qpc-bench report: %s ...\n", name)
		start := time.Now()
		err := f()
		r.Steps = append(r.Steps, Step{name, time.Since(start)})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Fprintf(cfg.Progress, "qpc-bench report: %s took %v\n", name, time.Since(start).Round(time.Millisecond))
		return ctx.Err()
	}
	steps := []struct {
		name string
		f    func() error
	}{
		{"DS throughput", func() (err error) {
			r.DS, r.Latencies, err = bench.RunLatencies(ctx, bench.Config{
				Scenario: "report", Senders: cfg.DSSenders, Duration: cfg.DSDuration, Logger: cfg.Logger,
			})
			if err == nil && (r.DS.Lost != 0 || r.DS.Duplicates != 0 || r.DS.BaselineLost != 0 || r.DS.BaselineDuplicates != 0) {
				err = fmt.Errorf("lost %d/%d, duplicated %d/%d (qpc/baseline)", r.DS.Lost, r.DS.BaselineLost, r.DS.Duplicates, r.DS.BaselineDuplicates)
			}
			return err
		}},
		{"sealed envelope", func() error {
			f, err := sealedFigures(cfg.Rounds)
			r.Figures = append(r.Figures, f...)
			return err
		}},
		{"tokens", func() error {
			f, err := tokenFigures(cfg.Rounds)
			r.Figures = append(r.Figures, f...)
			return err
		}},
		{"OPAQUE login", func() error {
			dir, cleanup, err := tempDir("qpc-bench-accounts-")
			if err != nil {
				return err
			}
			defer cleanup()
			f, err := loginFigures(dir, cfg.Rounds)
			r.Figures = append(r.Figures, f...)
			return err
		}},
		{fmt.Sprintf("KT at %d labels", cfg.KTLabels), func() (err error) {
			r.KT, err = ktFigures(ctx, cfg.KTLabels, cfg.Rounds, cfg.Progress)
			return err
		}},
		{"MLS commits", func() (err error) {
			r.MLS, r.MLSBase, err = mlsFigures(cfg.MLSSizes, cfg.Rounds)
			return err
		}},
	}
	for _, s := range steps {
		if err := step(s.name, s.f); err != nil {
			return r, err
		}
	}
	r.Took = time.Since(r.Started)

	if err := latencyPlot(filepath.Join(plotDir, PlotLatency), r.Latencies.QPC, r.Latencies.Baseline); err != nil {
		return r, err
	}
	if err := mlsPlot(filepath.Join(plotDir, PlotMLS), r.MLS, r.MLSBase); err != nil {
		return r, err
	}
	names, ratios := r.ratios()
	if err := ratioPlot(filepath.Join(plotDir, PlotRatios), names, ratios); err != nil {
		return r, err
	}
	f, err := os.Create(filepath.Join(cfg.OutDir, Markdown))
	if err != nil {
		return r, err
	}
	w := bufio.NewWriter(f)
	writeMarkdown(w, r, cfg)
	if err := w.Flush(); err != nil {
		f.Close()
		return r, err
	}
	return r, f.Close()
}

// ratios lists every figure's ratio to its baseline, short names first to
// last as the plot draws them bottom-up.
func (r *Report) ratios() ([]string, []float64) {
	var names []string
	var ratios []float64
	add := func(n string, v float64) { names, ratios = append(names, n), append(ratios, v) }
	if r.DS.BaselineMsgsPerS > 0 {
		add("DS send time per msg (relay rate / qpc rate)", r.DS.BaselineMsgsPerS/r.DS.MsgsPerS)
	}
	short := map[string]string{}
	for _, f := range r.Figures {
		n := f.Subject.Name
		if i := strings.IndexAny(n, "(,"); i > 0 {
			n = strings.TrimSpace(n[:i])
		}
		short[f.Subject.Name] = n
		add(n, f.Ratio())
	}
	if r.KT.Baseline.NsPerOp > 0 {
		add(fmt.Sprintf("KT lookup proof, %d labels", r.KT.Labels), r.KT.Prove.NsPerOp/r.KT.Baseline.NsPerOp)
		add("KT lookup verify", r.KT.Verify.NsPerOp/r.KT.Baseline.NsPerOp)
	}
	for _, p := range r.MLS {
		add(fmt.Sprintf("MLS commit, %d members", p.Members), p.Create.NsPerOp/r.MLSBase.NsPerOp)
	}
	return names, ratios
}

// Machine describes where the report ran.
type Machine struct {
	CPU       string
	CPUs      int // logical CPUs in /proc/cpuinfo
	NumCPU    int // runtime.NumCPU: the CPUs this process may use
	MemTotal  string
	GoVersion string
	OS, Arch  string
	LoadAvg   string // /proc/loadavg when the run started
	Kernel    string
}

func describeMachine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if m.CPU == "" {
					m.CPU = strings.TrimSpace(v)
				}
			case "processor":
				m.CPUs++
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(v), &kb)
				m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if m.CPU == "" {
		m.CPU = "unknown"
	}
	return m
}
