package gateway

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
)

// blockingSink hands every report to got and waits for release.
type blockingSink struct {
	got     chan Report
	release chan struct{}
}

func (b *blockingSink) Publish(ctx context.Context, r Report) error {
	b.got <- r
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil
}

// TestPublisherNeverBlocksAndWritesTheNewest: while a write hangs (the API
// server is hung), offers return at once; once it returns, the newest
// report is written and the ones in between are skipped.
func TestPublisherNeverBlocksAndWritesTheNewest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := &blockingSink{got: make(chan Report, 10), release: make(chan struct{})}
	p := newPublisher(sink, zap.NewNop())
	go p.run(ctx)
	next := func() string {
		select {
		case r := <-sink.got:
			return r.DegradedReason
		case <-time.After(5 * time.Second):
			t.Fatal("no report written within 5 s")
			return ""
		}
	}
	p.offer(Report{DegradedReason: "r1"})
	if got := next(); got != "r1" {
		t.Fatalf("first write %q, want r1", got)
	}
	start := time.Now()
	for _, r := range []string{"r2", "r3", "r4"} {
		p.offer(Report{DegradedReason: r})
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("offers took %s while a write hangs, want at once", d)
	}
	sink.release <- struct{}{}
	if got := next(); got != "r4" {
		t.Fatalf("after the hung write: %q written, want the newest r4", got)
	}
	sink.release <- struct{}{}
	select {
	case r := <-sink.got:
		t.Fatalf("%q written again: nothing was pending", r.DegradedReason)
	case <-time.After(100 * time.Millisecond):
	}
}
