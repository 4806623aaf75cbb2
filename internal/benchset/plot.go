package benchset

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The PNG's size in pixels, at plotDPI.
const (
	PlotWidth  = 900
	PlotHeight = 450
	plotDPI    = 96
)

var (
	blue   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange = color.RGBA{R: 0xd6, G: 0x5f, B: 0x0e, A: 0xff}
	grey   = color.Gray{Y: 0xdd}
)

// WritePlot draws the set into a PNG at path: heartbeat RPC latency p50 and
// p99 against N on the left, masterd's CPU against N on the right, N on a
// log axis. Runs without figures are left out.
func WritePlot(path string, runs []LoadResult) error {
	var ns []int
	var p50, p99, cpu, cpuPeak plotter.XYs
	for _, rr := range runs {
		ns = append(ns, rr.Load.N)
		res := rr.Result
		if res == nil {
			continue
		}
		n := float64(rr.Load.N)
		if hb := res.Heartbeat; hb.Count > 0 {
			p50 = append(p50, plotter.XY{X: n, Y: hb.P50})
			p99 = append(p99, plotter.XY{X: n, Y: hb.P99})
		}
		if u := res.MasterUsage; u != nil && u.Steady != nil {
			cpu = append(cpu, plotter.XY{X: n, Y: u.Steady.CPUPercent})
			peak, _ := peakCPU(u)
			cpuPeak = append(cpuPeak, plotter.XY{X: n, Y: peak})
		}
	}

	// Each plot leaves its top band to the legend: the data stays below.
	lat := newScalePlot("Heartbeat RPC latency", "latency (ms, log scale)", ns)
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = decadeTicks{}
	lat.Y.Min, lat.Y.Max = 0.1, 100
	if len(p99)+len(p50) > 0 {
		lo, hi := yRange(append(slices.Clone(p50), p99...))
		lo = max(lo, 0.001)                                      // a log axis has no 0
		lat.Y.Min = math.Pow(10, math.Floor(math.Log10(lo/1.5))) // a labelled decade below the lowest
		lat.Y.Max = max(hi, heartbeatP99MS) * 6
	}
	if err := addTarget(lat, fmt.Sprintf("p99 target at %s: %d ms", count(scaleN), heartbeatP99MS), heartbeatP99MS); err != nil {
		return err
	}
	for _, s := range []struct {
		name  string
		xys   plotter.XYs
		color color.Color
	}{{"p99", p99, orange}, {"p50", p50, blue}} {
		for i := range s.xys {
			s.xys[i].Y = max(s.xys[i].Y, lat.Y.Min)
		}
		if err := addSeries(lat, s.name, s.xys, s.color, false); err != nil {
			return err
		}
	}

	load := newScalePlot("masterd CPU", "% of one core", ns)
	load.Y.Min, load.Y.Max = 0, masterCPUPercent*1.35
	if len(cpuPeak) > 0 {
		_, hi := yRange(cpuPeak)
		load.Y.Max = max(load.Y.Max, hi*1.35)
	}
	if err := addTarget(load, fmt.Sprintf("target at %s: %d%%", count(scaleN), masterCPUPercent), masterCPUPercent); err != nil {
		return err
	}
	for _, s := range []struct {
		name   string
		xys    plotter.XYs
		color  color.Color
		dashed bool
	}{{"peak (1 s, cold join included)", cpuPeak, orange, true}, {"steady average", cpu, blue, false}} {
		if err := addSeries(load, s.name, s.xys, s.color, s.dashed); err != nil {
			return err
		}
	}
	for _, p := range []*plot.Plot{lat, load} {
		p.Legend.Top, p.Legend.Left = true, true
		p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), vg.Points(-4)
	}

	img := vgimg.NewWith(vgimg.UseWH(vg.Length(PlotWidth)*vg.Inch/plotDPI, vg.Length(PlotHeight)*vg.Inch/plotDPI), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(24), PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12)}
	for i, p := range []*plot.Plot{lat, load} {
		p.Draw(tiles.At(dc, i, 0))
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write the plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write the plot %s: %w", path, err)
	}
	return nil
}

// newScalePlot is a plot against N: a log axis ticked at the set's Ns.
func newScalePlot(title, ylabel string, ns []int) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = "simulated slaves (N, log scale)"
	p.Y.Label.Text = ylabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(11)
		a.Tick.Label.Font.Size = vg.Points(10)
	}
	grid := plotter.NewGrid() // first, under the data
	grid.Vertical.Color, grid.Horizontal.Color = grey, grey
	p.Add(grid)
	p.X.Scale = plot.LogScale{}
	var ticks plot.ConstantTicks
	lo, hi := 10.0, 10000.0
	for i, n := range ns {
		ticks = append(ticks, plot.Tick{Value: float64(n), Label: count(n)})
		if i == 0 {
			lo, hi = float64(n), float64(n)
		}
		lo, hi = min(lo, float64(n)), max(hi, float64(n))
	}
	p.X.Tick.Marker = ticks
	p.X.Min, p.X.Max = lo/1.6, hi*1.6
	return p
}

// addSeries draws xys as a line with points and names it in the legend.
// It keeps the axes' ranges as they were set.
// A series without points is left out.
func addSeries(p *plot.Plot, name string, xys plotter.XYs, c color.Color, dashed bool) error {
	if len(xys) == 0 {
		return nil
	}
	xmin, xmax, ymin, ymax := p.X.Min, p.X.Max, p.Y.Min, p.Y.Max
	line, points, err := plotter.NewLinePoints(xys)
	if err != nil {
		return fmt.Errorf("plot %s: %w", name, err)
	}
	line.Color = c
	line.Width = vg.Points(2)
	if dashed {
		line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	}
	points.Color = c
	points.Shape = draw.CircleGlyph{}
	points.Radius = vg.Points(3)
	p.Add(line, points)
	p.Legend.Add(name, line, points)
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = xmin, xmax, ymin, ymax
	return nil
}

// addTarget draws a target as a grey dashed line across the plot.
func addTarget(p *plot.Plot, name string, y float64) error {
	line, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: y}, {X: p.X.Max, Y: y}})
	if err != nil {
		return fmt.Errorf("plot %s: %w", name, err)
	}
	line.Color = color.Gray{Y: 0x88}
	line.Width = vg.Points(1)
	line.Dashes = []vg.Length{vg.Points(2), vg.Points(3)}
	xmin, xmax, ymin, ymax := p.X.Min, p.X.Max, p.Y.Min, p.Y.Max
	p.Add(line)
	p.Legend.Add(name, line)
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = xmin, xmax, ymin, ymax
	return nil
}

func yRange(xys plotter.XYs) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, xy := range xys {
		lo, hi = min(lo, xy.Y), max(hi, xy.Y)
	}
	return lo, hi
}

// decadeTicks marks a log axis: a labelled tick at each power of ten and
// minor ticks between.
type decadeTicks struct{}

func (decadeTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
		base := math.Pow(10, e)
		for i := 1; i < 10; i++ {
			v := base * float64(i)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if i == 1 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
