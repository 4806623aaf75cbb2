package benchset

import (
	"strings"
	"testing"
)

const history = `# Benchmarks

Every figure here comes with the command that produced it.
The machine: 2 vCPUs.

Timing figures on this VM depend on how busy the rest of the machine is.

## Registry: Lookup round trips (issue 2)

| connection | p50 |
|---|---|
| mutual TLS | 33 µs |
`

func TestSplice(t *testing.T) {
	block := func(section string) string {
		return BeginMarker + "\n" + section + EndMarker + "\n"
	}
	for _, tc := range []struct {
		name, doc, want string
	}{{
		name: "markers missing: after the first paragraph",
		doc:  history,
		want: strings.Replace(history, "The machine: 2 vCPUs.\n\n", "The machine: 2 vCPUs.\n\n"+block("## New\n\nfigures\n")+"\n", 1),
	}, {
		name: "markers present: only what is between them changes",
		doc:  "# Benchmarks\n\nintro\n\n" + block("## Old\n\nold figures\n") + "\n## History\n\nkept\n",
		want: "# Benchmarks\n\nintro\n\n" + block("## New\n\nfigures\n") + "\n## History\n\nkept\n",
	}, {
		name: "markers at the very end, without a final newline",
		doc:  "# Benchmarks\n\nintro\n\n" + BeginMarker + "\nold\n" + EndMarker,
		want: "# Benchmarks\n\nintro\n\n" + block("## New\n\nfigures\n"),
	}, {
		name: "no heading: appended",
		doc:  "Some notes.\nMore.",
		want: "Some notes.\nMore.\n\n" + block("## New\n\nfigures\n"),
	}, {
		name: "heading with a paragraph that runs to the end",
		doc:  "# Benchmarks\n\nonly this\n",
		want: "# Benchmarks\n\nonly this\n\n" + block("## New\n\nfigures\n"),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Splice(tc.doc, "## New\n\nfigures\n\n")
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			again, err := Splice(got, "## New\n\nfigures\n")
			if err != nil || again != got {
				t.Errorf("a second splice changed the doc (err %v):\n%s", err, again)
			}
		})
	}
}

func TestSpliceKeepsTheRest(t *testing.T) {
	first, err := Splice(history, "## Run 1\n")
	if err != nil {
		t.Fatal(err)
	}
	second, err := Splice(first, "## Run 2\n\nwith more lines\n")
	if err != nil {
		t.Fatal(err)
	}
	strip := func(doc string) string {
		b := strings.Index(doc, BeginMarker)
		e := strings.Index(doc, EndMarker) + len(EndMarker) + 1
		return doc[:b] + doc[e:]
	}
	if strip(first) != strip(second) {
		t.Errorf("outside the markers the doc changed:\n%s\n---\n%s", strip(first), strip(second))
	}
	if strings.Contains(second, "Run 1") || !strings.Contains(second, "with more lines") {
		t.Errorf("the section was not replaced:\n%s", second)
	}
	// Only the blank line after the block is new.
	if want := strings.Replace(history, "vCPUs.\n\n", "vCPUs.\n\n\n", 1); strip(first) != want {
		t.Errorf("outside the markers, the doc is not the one before:\n%s", strip(first))
	}
}

func TestSpliceBrokenMarkers(t *testing.T) {
	for _, doc := range []string{
		"# Benchmarks\n\n" + BeginMarker + "\nno end\n",
		"# Benchmarks\n\n" + EndMarker + "\n" + BeginMarker + "\n",
		"# Benchmarks\n\n" + EndMarker + "\n",
	} {
		if _, err := Splice(doc, "x\n"); err == nil {
			t.Errorf("no error for broken markers in %q", doc)
		}
	}
}
