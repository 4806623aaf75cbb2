package benchset

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlot(t *testing.T) {
	for _, tc := range []struct {
		name  string
		loads func(*testing.T) []LoadResult
		want  []string // legend entries
	}{
		{"standard", func(t *testing.T) []LoadResult { return standardReport(t).Loads },
			[]string{"p99 target at 10,000: 50 ms", "p99", "p50", "target at 10,000: 100%", "peak (1 s, cold join included)", "steady average"}},
		{"none-measured", func(*testing.T) []LoadResult {
			return []LoadResult{{Load: Load{N: 100}, Failed: "x"}, {Load: Load{N: 1000}, Failed: "y"}}
		}, []string{"p99 target at 10,000: 50 ms", "target at 10,000: 100%"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svg, err := Plot(tc.loads(t))
			if err != nil {
				t.Fatal(err)
			}
			width, height, texts := readSVG(t, svg)
			if width != "900" || height != "450" {
				t.Errorf("the SVG is %s×%s, want %d×%d", width, height, PlotWidth, PlotHeight)
			}
			for _, w := range append(tc.want, "Heartbeat RPC latency", "masterd CPU", "simulated slaves (N, log scale)", "100", "1,000") {
				if !texts[w] {
					t.Errorf("no text %q in the SVG", w)
				}
			}

			golden := filepath.Join("testdata", "plot-"+tc.name+".golden.svg")
			if *update {
				if err := os.WriteFile(golden, svg, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to make it)", err)
			}
			if !bytes.Equal(svg, want) {
				t.Errorf("Plot differs from %s (run go test -update and look at the picture)", golden)
			}
		})
	}
}

// readSVG checks that svg is well-formed XML and returns the root's size
// and every text it shows.
func readSVG(t *testing.T, svg []byte) (width, height string, texts map[string]bool) {
	t.Helper()
	texts = map[string]bool{}
	d := xml.NewDecoder(bytes.NewReader(svg))
	inText := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return width, height, texts
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			inText = tok.Name.Local == "text"
			if tok.Name.Local != "svg" {
				break
			}
			for _, a := range tok.Attr {
				switch a.Name.Local {
				case "width":
					width = a.Value
				case "height":
					height = a.Value
				}
			}
		case xml.CharData:
			if inText {
				texts[strings.TrimSpace(string(tok))] = true
			}
		case xml.EndElement:
			inText = false
		}
	}
}

// Write draws the plot beside the doc, links it relative to the doc, and
// keeps the doc's own text.
func TestWrite(t *testing.T) {
	docs := filepath.Join(t.TempDir(), "docs")
	if err := os.Mkdir(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	o := Options{Out: filepath.Join(docs, "BENCHMARKS.md"), Plot: filepath.Join(docs, "bench-scale.svg")}
	if err := os.WriteFile(o.Out, []byte(history), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := standardReport(t)
	rep.Plot = ""
	if err := Write(rep, o); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Registry: Lookup round trips (issue 2)", BeginMarker, "](bench-scale.svg)\n", EndMarker} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("the doc has no %q:\n%s", want, doc)
		}
	}
	svg, err := os.ReadFile(o.Plot)
	if err != nil {
		t.Fatal(err)
	}
	if w, h, _ := readSVG(t, svg); w != "900" || h != "450" {
		t.Errorf("the SVG is %s×%s", w, h)
	}

	err = WritePlot(filepath.Join(t.TempDir(), "missing", "plot.svg"), nil)
	if err == nil || !strings.Contains(err.Error(), "write the plot") {
		t.Errorf("into a missing directory: got %v, want an error that says it could not write the plot", err)
	}
}
