package query

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// defaultWaitTimeout is how long wait waits without --timeout.
const defaultWaitTimeout = 30 * time.Second

// waitStates are the states wait member --for takes; gone is "not in the roll".
var waitStates = []string{"alive", "suspect", "dead", "left", "gone"}

// condition is what wait polls for.
type condition struct {
	what string // "service ClusterService/lab to answer"
	// check says whether the condition holds and, in words, what it found.
	// An error it returns is fatal (a missing certificate, a refusal):
	// anything that may pass by itself, like a daemon not up yet, is
	// reported as found, not as an error.
	check func(ctx context.Context) (bool, string, error)
}

// waitCondition reads wait's arguments.
func (q *query) waitCondition(args []string) (condition, error) {
	const synopsis = "usage: rpc-query wait service NAME[/INSTANCE] | wait member NODE --for STATE | wait members --alive N"
	if len(args) == 0 {
		return condition{}, usageError(synopsis)
	}
	kind := args[0]
	if kind != "member" && q.o.forState != "" {
		return condition{}, usageError("--for applies to wait member NODE, not wait " + kind)
	}
	if kind != "members" && q.o.alive != 0 {
		return condition{}, usageError("--alive applies to wait members, not wait " + kind)
	}
	switch kind {
	case "service":
		if len(args) != 2 {
			return condition{}, usageError("usage: rpc-query wait service NAME[/INSTANCE]")
		}
		key, err := rpcdef.ParseServiceKey(args[1])
		if err != nil {
			return condition{}, usageError(err.Error())
		}
		return condition{what: fmt.Sprintf("%s to answer", key), check: func(ctx context.Context) (bool, string, error) {
			p, err := q.pingKey(ctx, key)
			if err != nil {
				return false, "", q.fatal(err)
			}
			return true, fmt.Sprintf("version %d at %s", p.version, p.addr), nil
		}}, nil
	case "member":
		if len(args) != 2 {
			return condition{}, usageError("usage: rpc-query wait member NODE --for alive|suspect|dead|left|gone")
		}
		node := args[1]
		if err := pki.ValidName(node); err != nil {
			return condition{}, usageError(fmt.Sprintf("wait member %s: %v", node, err))
		}
		want := q.o.forState
		if want == "" {
			return condition{}, usageError(fmt.Sprintf("wait member %s: say which state with --for: %s", node, joinList(waitStates)))
		}
		if !slices.Contains(waitStates, want) {
			return condition{}, usageError(fmt.Sprintf("--for %q: want one of %s", want, joinList(waitStates)))
		}
		what := fmt.Sprintf("member %s to be %s", node, want)
		if want == "gone" {
			what = fmt.Sprintf("member %s to be gone from the roll", node)
		}
		return condition{what: what, check: func(ctx context.Context) (bool, string, error) {
			return q.memberIs(ctx, node, want)
		}}, nil
	case "members":
		if len(args) != 1 {
			return condition{}, usageError("usage: rpc-query wait members --alive N")
		}
		if q.o.alive <= 0 {
			return condition{}, usageError("wait members: say how many with --alive N (N at least 1)")
		}
		n := q.o.alive
		return condition{what: fmt.Sprintf("at least %s alive", plural(n, "member")), check: func(ctx context.Context) (bool, string, error) {
			r, err := q.roll(ctx)
			if err != nil {
				return false, "", q.fatal(err)
			}
			alive := 0
			for _, m := range r.Members {
				if m.Status == rpcdef.StatusAlive {
					alive++
				}
			}
			return alive >= n, summary(r.Members, 0), nil
		}}, nil
	}
	return condition{}, usageError(fmt.Sprintf("wait %s: want wait service, wait member or wait members", kind))
}

// memberIs says whether node is in state want ("gone": not in the roll).
func (q *query) memberIs(ctx context.Context, node, want string) (bool, string, error) {
	m, err := q.connect(ctx)
	if err != nil {
		return false, "", q.fatal(err)
	}
	defer m.Close()
	r, err := m.Members(ctx, node)
	if errors.Is(err, rpcdef.ErrNotFound) {
		return want == "gone", fmt.Sprintf("%s is not in the roll", node), nil
	}
	if err != nil {
		return false, "", q.fatal(q.explainMaster(m, err))
	}
	for _, mb := range r.Members {
		if mb.Name == node {
			return string(mb.Status) == want, fmt.Sprintf("%s is %s", node, dash(string(mb.Status))), nil
		}
	}
	return want == "gone", fmt.Sprintf("%s is not in the roll", node), nil
}

// fatalError is a failure that waiting will not cure.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// fatal sorts a failed attempt: a missing certificate or a refusal ends the
// wait; anything else (nothing listens yet, not registered yet, no answer)
// is what wait is for, and is returned as it is, to be tried again.
func (q *query) fatal(err error) error {
	var coded *rpcdef.Error
	if errors.As(err, &coded) && (errors.Is(err, rpcdef.ErrPermission) || errors.Is(err, rpcdef.ErrIncompatible)) {
		return fatalError{err}
	}
	var fe fatalError
	if errors.As(err, &fe) {
		return fe // store: no certificate given, or it does not load
	}
	return err
}

// wait polls a condition every pollEvery until it holds or ctx ends, and
// prints one line: what it waited for and how that ended. A timeout is
// exit 3.
func (q *query) wait(ctx context.Context, args []string) error {
	c, err := q.waitCondition(args)
	if err != nil {
		return err
	}
	start := time.Now()
	last := "nothing yet"
	for attempt := 1; ; attempt++ {
		// One attempt may not eat the whole wait: a call that hangs is
		// given up, and tried again.
		actx, cancel := context.WithTimeout(ctx, rpcdef.DefaultCallTimeout)
		ok, found, err := c.check(actx)
		cancel()
		var fe fatalError
		switch {
		case errors.As(err, &fe):
			return fmt.Errorf("gave up waiting for %s: %w", c.what, fe.error)
		case err != nil:
			found = err.Error()
		case ok:
			_, werr := fmt.Fprintf(q.out, "waited %s for %s: %s\n", waited(time.Since(start)), c.what, found)
			return werr
		}
		if ctx.Err() == nil || last == "nothing yet" {
			last = found // an attempt cut short by the deadline says less than the one before
		}
		t := time.NewTimer(q.pollEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return timeoutError(fmt.Sprintf("timed out after %v waiting for %s (%s); last: %s", q.o.timeout, c.what, plural(attempt, "attempt"), last))
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waited is a wait's length: "0.2s", "12.3s".
func waited(d time.Duration) string {
	return strconv.FormatFloat(d.Round(100*time.Millisecond).Seconds(), 'f', 1, 64) + "s"
}
