package registry

import (
	"bytes"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// fuzzNow is the restoring table's clock: fixed, so every restored lease has
// exactly one TTL left.
var fuzzNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

const fuzzTTL = 10 * time.Second

func fuzzTable() *Table {
	return NewTable(fuzzTTL, func() time.Time { return fuzzNow }, nil)
}

// snapshotOf is what the table would save now.
func snapshotOf(t *testing.T, tb *Table) []byte {
	t.Helper()
	tb.mu.RLock()
	defer tb.mu.RUnlock()
	data, err := encodeSnapshot(tb.m)
	if err != nil {
		t.Fatalf("a restored table does not save: %v", err)
	}
	return data
}

// FuzzRestore reads the fuzzed bytes as registry.json. A table that takes
// them holds only valid, stale entries, and saves a file that restores to
// the same table.
func FuzzRestore(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		tb := fuzzTable()
		n, err := tb.Restore(data)
		if err != nil {
			if n != 0 || len(tb.List()) != 0 {
				t.Fatalf("Restore failed (%v) but returned %d and left %d entries", err, n, len(tb.List()))
			}
			return
		}
		es := tb.List()
		if len(es) != n {
			t.Fatalf("Restore returned %d but the table lists %d entries", n, len(es))
		}
		for _, e := range es {
			if e.State != rpcdef.StateStale || e.Remaining != fuzzTTL {
				t.Errorf("restored %s is %s with %v left; want %s with %v", e.ServiceKey, e.State, e.Remaining, rpcdef.StateStale, fuzzTTL)
			}
			if err := rpcdef.ValidServiceName(e.Name); err != nil {
				t.Errorf("restored service name %q: %v", e.Name, err)
			}
			if err := pki.ValidName(e.Instance); err != nil {
				t.Errorf("restored instance %q: %v", e.Instance, err)
			}
			if e.Addr == "" || len(e.Addr) > 255 || e.Version < 0 || e.Owner == "" {
				t.Errorf("restored %s with addr %q, version %d, owner %q", e.ServiceKey, e.Addr, e.Version, e.Owner)
			}
		}

		saved := snapshotOf(t, tb)
		again := fuzzTable()
		n2, err := again.Restore(saved)
		if err != nil || n2 != n {
			t.Fatalf("the table restored from its own save: %d entries, %v; want %d\n%s", n2, err, n, saved)
		}
		if resaved := snapshotOf(t, again); !bytes.Equal(resaved, saved) {
			t.Fatalf("save, restore, save differs:\n%s\nthen\n%s", saved, resaved)
		}
		es2 := again.List()
		for i := range es {
			a, b := es[i], es2[i]
			if a.Service != b.Service || a.Owner != b.Owner || a.State != b.State || a.Remaining != b.Remaining || !a.Since.Equal(b.Since) {
				t.Fatalf("entry %d: %+v, restored from its save as %+v", i, a, b)
			}
		}
	})
}
