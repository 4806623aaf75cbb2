package benchset

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestWritePlot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		loads func(*testing.T) []LoadResult
	}{
		{"standard", func(t *testing.T) []LoadResult { return standardReport(t).Loads }},
		{"none measured", func(*testing.T) []LoadResult {
			return []LoadResult{{Load: Load{N: 100}, Failed: "x"}, {Load: Load{N: 1000}, Failed: "y"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each draws a whole PNG: slow under -race
			path := filepath.Join(t.TempDir(), "plot.png")
			if err := WritePlot(path, tc.loads(t)); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cfg, err := png.DecodeConfig(f)
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if cfg.Width != PlotWidth || cfg.Height != PlotHeight {
				t.Errorf("the PNG is %d×%d, want %d×%d", cfg.Width, cfg.Height, PlotWidth, PlotHeight)
			}
		})
	}
}
