package benchset

import (
	"fmt"
	"strings"
)

// The lines between which benchset owns docs/BENCHMARKS.md.
const (
	BeginMarker = "<!-- benchset:begin -->"
	EndMarker   = "<!-- benchset:end -->"
)

// Splice puts section between the markers in doc and keeps everything
// else as it was. A doc without the markers gets them, with the section,
// after the first paragraph under its "# Benchmarks" heading (at the end
// if it has no such heading).
func Splice(doc, section string) (string, error) {
	block := BeginMarker + "\n" + strings.TrimRight(section, "\n") + "\n" + EndMarker + "\n"
	begin := markerLine(doc, BeginMarker)
	end := markerLine(doc, EndMarker)
	switch {
	case begin >= 0 && end > begin:
		after := len(doc) // past the end marker's line
		if j := strings.IndexByte(doc[end:], '\n'); j >= 0 {
			after = end + j + 1
		}
		return doc[:begin] + block + doc[after:], nil
	case begin >= 0 || end >= 0:
		return "", fmt.Errorf("the markers are broken: want a line %q and, after it, a line %q; fix them by hand", BeginMarker, EndMarker)
	}
	at, ok := afterFirstParagraph(doc)
	if !ok || at == len(doc) {
		return endParagraph(doc) + block, nil
	}
	return doc[:at] + block + "\n" + doc[at:], nil
}

// endParagraph ends doc with a blank line, unless it is empty.
func endParagraph(doc string) string {
	switch {
	case doc == "" || strings.HasSuffix(doc, "\n\n"):
		return doc
	case strings.HasSuffix(doc, "\n"):
		return doc + "\n"
	}
	return doc + "\n\n"
}

// markerLine is where the line that is exactly marker starts, or -1.
func markerLine(doc, marker string) int {
	off := 0
	for _, line := range strings.SplitAfter(doc, "\n") {
		if strings.TrimRight(line, " \r\n") == marker {
			return off
		}
		off += len(line)
	}
	return -1
}

// afterFirstParagraph is the offset just past the blank line that ends the
// first paragraph under the "# Benchmarks" heading: where a new block goes.
func afterFirstParagraph(doc string) (int, bool) {
	lines := strings.SplitAfter(doc, "\n")
	off, heading := 0, -1
	for i, l := range lines {
		off += len(l)
		if strings.TrimSpace(l) == "# Benchmarks" {
			heading = i
			break
		}
	}
	if heading < 0 {
		return 0, false
	}
	seen := false // a line of the paragraph
	for _, l := range lines[heading+1:] {
		off += len(l)
		if strings.TrimSpace(l) != "" {
			seen = true
		} else if seen {
			return off, true
		}
	}
	return len(doc), true
}
