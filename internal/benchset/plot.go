package benchset

import (
	"bytes"
	_ "embed"
	"fmt"
	"math"
	"strconv"
	"text/template"

	"github.com/muster-lab/muster/internal/atomicfile"
)

// The picture's size in pixels: two panels side by side.
const (
	PlotWidth  = 900
	PlotHeight = 450
)

// Where a panel draws its data, in pixels from the panel's top left. Above
// it go the title and the legend, below it the N axis's labels.
const (
	panelWidth = PlotWidth / 2
	areaLeft   = 72
	areaRight  = panelWidth - 24
	areaTop    = 110
	areaBottom = PlotHeight - 64
)

const (
	blue   = "#1f77b4"
	orange = "#d65f0e"
	grey   = "#888888"
)

//go:embed scale.svg.tmpl
var scaleSVG string

var scaleTemplate = template.Must(template.New("scale.svg.tmpl").Parse(scaleSVG))

// WritePlot draws the set into an SVG at path: heartbeat RPC latency p50
// and p99 against N on the left, masterd's CPU against N on the right, N on
// a log axis. Runs without figures are left out.
func WritePlot(path string, runs []LoadResult) error {
	svg, err := Plot(runs)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, svg, 0o644); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	return nil
}

// Plot is the SVG that WritePlot writes.
func Plot(runs []LoadResult) ([]byte, error) {
	var ns []int
	var p50, p99, cpu, cpuPeak []point
	for _, rr := range runs {
		ns = append(ns, rr.Load.N)
		res := rr.Result
		if res == nil {
			continue
		}
		n := float64(rr.Load.N)
		if hb := res.Heartbeat; hb.Count > 0 {
			p50 = append(p50, point{n, hb.P50})
			p99 = append(p99, point{n, hb.P99})
		}
		if u := res.MasterUsage; u != nil && u.Steady != nil {
			peak, _ := peakCPU(u)
			cpu = append(cpu, point{n, u.Steady.CPUPercent})
			cpuPeak = append(cpuPeak, point{n, peak})
		}
	}
	x := nScale(ns)

	// Latency on decades: from the one below the lowest figure to the one
	// above the highest, or the target.
	lat := scale{lo: 0.1, hi: 100, from: areaBottom, to: areaTop, log: true}
	if lo, hi, ok := yRange(p50, p99); ok {
		lat.lo = math.Pow(10, math.Floor(math.Log10(max(lo, 0.001))))
		lat.hi = math.Pow(10, math.Ceil(math.Log10(max(hi, heartbeatP99MS)*1.2)))
	}
	left := panel{
		Title: "Heartbeat RPC latency", YLabel: "latency (ms, log scale)",
		XTicks: x.ticksAt(ns), YTicks: lat.decades(),
	}
	left.add(x, lat, fmt.Sprintf("p99 target at %s: %d ms", count(scaleN), heartbeatP99MS), grey, "2,3", false, x.across(heartbeatP99MS))
	left.add(x, lat, "p99", orange, "", true, p99)
	left.add(x, lat, "p50", blue, "", true, p50)

	load := scale{lo: 0, hi: masterCPUPercent * 1.2, from: areaBottom, to: areaTop}
	if _, hi, ok := yRange(cpuPeak); ok {
		load.hi = max(load.hi, hi*1.15)
	}
	load.hi = math.Ceil(load.hi/roundStep(load.hi)) * roundStep(load.hi) // the top is labelled
	right := panel{
		Left: panelWidth, Title: "masterd CPU", YLabel: "% of one core",
		XTicks: x.ticksAt(ns), YTicks: load.steps(),
	}
	right.add(x, load, fmt.Sprintf("target at %s: %d%%", count(scaleN), masterCPUPercent), grey, "2,3", false, x.across(masterCPUPercent))
	right.add(x, load, "peak (1 s, cold join included)", orange, "6,3", true, cpuPeak)
	right.add(x, load, "steady average", blue, "", true, cpu)

	var b bytes.Buffer
	err := scaleTemplate.Execute(&b, map[string]any{
		"Width": PlotWidth, "Height": PlotHeight, "Panels": []panel{left, right},
		"Left": areaLeft, "Right": areaRight, "Top": areaTop, "Bottom": areaBottom,
		"MidX": (areaLeft + areaRight) / 2, "MidY": (areaTop + areaBottom) / 2,
		"Tick": areaLeft - 6, "MinorTick": areaLeft - 3, "BelowTick": areaBottom + 6,
		"LegendLine": areaLeft + 28, "LegendDot": areaLeft + 14, "LegendText": areaLeft + 36,
	})
	if err != nil {
		return nil, fmt.Errorf("draw the plot: %w", err)
	}
	return b.Bytes(), nil
}

// panel is one plot of the picture, in pixels, as the template draws it.
type panel struct {
	Left           int // its offset in the picture
	Title, YLabel  string
	XTicks, YTicks []tick
	Series         []series
}

// tick is a mark on an axis with a grid line, or without a label a minor mark.
type tick struct {
	At    float64
	Label string
}

// series is a line in the legend and on the plot, with a dot at each point
// if Dots.
type series struct {
	Name, Color string
	Dash        string // SVG stroke-dasharray; "" for a solid line
	Dots        bool
	Points      []point
	LegendY     int
}

type point struct{ X, Y float64 }

// add draws values as a line, in pixels; a line without points is left out.
func (p *panel) add(x, y scale, name, color, dash string, dots bool, values []point) {
	if len(values) == 0 {
		return
	}
	s := series{Name: name, Color: color, Dash: dash, Dots: dots, LegendY: 48 + 18*len(p.Series)}
	for _, v := range values {
		s.Points = append(s.Points, point{x.at(v.X), y.at(max(v.Y, y.lo))})
	}
	p.Series = append(p.Series, s)
}

// scale maps a value to a pixel: linearly, or linearly in its logarithm.
type scale struct {
	lo, hi   float64 // the values at the ends
	from, to float64 // their pixels
	log      bool
}

func (s scale) at(v float64) float64 {
	lo, hi := s.lo, s.hi
	if s.log {
		v, lo, hi = math.Log10(v), math.Log10(lo), math.Log10(hi)
	}
	px := s.from + (v-lo)/(hi-lo)*(s.to-s.from)
	return math.Round(px*10) / 10
}

// nScale is the N axis: logarithmic, with room either side of the set's Ns.
func nScale(ns []int) scale {
	lo, hi := 100.0, 10000.0
	for i, n := range ns {
		if i == 0 {
			lo, hi = float64(n), float64(n)
		}
		lo, hi = min(lo, float64(n)), max(hi, float64(n))
	}
	return scale{lo: lo / 1.6, hi: hi * 1.6, from: areaLeft, to: areaRight, log: true}
}

// ticksAt labels the set's Ns.
func (s scale) ticksAt(ns []int) []tick {
	var out []tick
	for _, n := range ns {
		out = append(out, tick{At: s.at(float64(n)), Label: count(n)})
	}
	return out
}

// across is a line at y from one end of the N axis to the other.
func (s scale) across(y float64) []point { return []point{{s.lo, y}, {s.hi, y}} }

// decades ticks a log axis: a label at each power of ten, minor marks between.
func (s scale) decades() []tick {
	var out []tick
	for e := math.Round(math.Log10(s.lo)); math.Pow(10, e) <= s.hi*1.001; e++ {
		base := math.Pow(10, e)
		out = append(out, tick{At: s.at(base), Label: decadeLabel(base)})
		for i := 2; i < 10 && base*float64(i) < s.hi; i++ {
			out = append(out, tick{At: s.at(base * float64(i))})
		}
	}
	return out
}

func decadeLabel(v float64) string {
	if v >= 1 {
		return count(int(math.Round(v)))
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// roundStep is a round step for ticking 0 to hi, 1, 2 or 5 times a power
// of ten: at most six of them.
func roundStep(hi float64) float64 {
	base := math.Pow(10, math.Floor(math.Log10(hi/5)))
	step := base
	for _, m := range []float64{2, 5, 10} {
		if hi/step <= 6 {
			break
		}
		step = base * m
	}
	return step
}

// steps ticks a linear axis from 0 at a round step.
func (s scale) steps() []tick {
	step := roundStep(s.hi)
	var out []tick
	for i := 0.0; i*step <= s.hi*1.001; i++ {
		v := i * step
		out = append(out, tick{At: s.at(v), Label: strconv.FormatFloat(v, 'f', -1, 64)})
	}
	return out
}

// yRange is the lowest and highest Y of the points; ok is false if there
// are none.
func yRange(sets ...[]point) (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, set := range sets {
		for _, p := range set {
			lo, hi, ok = min(lo, p.Y), max(hi, p.Y), true
		}
	}
	return lo, hi, ok
}
