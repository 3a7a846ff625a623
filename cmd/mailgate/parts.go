package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// parts runs the daemon's parts (fetcher, relay workers, listeners) as one
// group: the first to fail, or to return while nobody asked it to stop,
// ends the group's context, which stops the others. A daemon missing one
// part must not go on looking alive: it exits, and systemd restarts it
// whole.
type parts struct {
	g    *errgroup.Group
	ctx  context.Context // ends when the daemon's context ends or a part fails
	mu   sync.Mutex
	done map[string]chan struct{} // closed when the part has returned
}

// partError is a part's failure, what serve exits with.
type partError struct {
	part string
	err  error
}

func (e *partError) Error() string { return e.part + " stopped: " + e.err.Error() }
func (e *partError) Unwrap() error { return e.err }

// errReturned is the failure of a part that returned on its own: each is
// meant to run until told to stop.
var errReturned = errors.New("returned on its own while the daemon was running")

func newParts(ctx context.Context) *parts {
	g, gctx := errgroup.WithContext(ctx)
	return &parts{g: g, ctx: gctx, done: make(map[string]chan struct{})}
}

// start runs f as the part name, with the group's context. What f returns
// once that context has ended is the stop asked for, not a failure.
func (p *parts) start(name string, f func(ctx context.Context) error) {
	done := make(chan struct{})
	p.mu.Lock()
	p.done[name] = done
	p.mu.Unlock()
	p.g.Go(func() error {
		defer close(done)
		err := f(p.ctx)
		if p.ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errReturned
		}
		return &partError{part: name, err: err}
	})
}

// failure is the part failure that ended the group, or nil when the
// daemon's own context ended it (a signal) or it has not ended.
func (p *parts) failure() error {
	var pe *partError
	if errors.As(context.Cause(p.ctx), &pe) {
		return pe
	}
	return nil
}

// wait waits until the named parts (all of them when none is named) have
// returned, or ctx ends; then it names those still running.
func (p *parts) wait(ctx context.Context, names ...string) error {
	p.mu.Lock()
	if len(names) == 0 {
		for n := range p.done {
			names = append(names, n)
		}
	}
	chans := make([]chan struct{}, len(names))
	for i, n := range names {
		chans[i] = p.done[n]
	}
	p.mu.Unlock()
	for _, c := range chans {
		select {
		case <-c:
		case <-ctx.Done():
			return fmt.Errorf("still running when the shutdown grace ended: %s", strings.Join(p.running(names), ", "))
		}
	}
	return nil
}

// running lists which of names have not returned yet.
func (p *parts) running(names []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, n := range names {
		select {
		case <-p.done[n]:
		default:
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
