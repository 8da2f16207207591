package gateway

import (
	"context"
	"sync"

	"go.uber.org/zap"
)

// publisher writes the reports to the status sink from a goroutine of its
// own, newest first: a status write hung on the API server (a SIGSTOPped
// server holds it until the client gives up, tens of seconds) must not
// hold the reconcile passes, which decide who bridges.
type publisher struct {
	sink StatusSink
	log  *zap.Logger
	wake chan struct{}

	mu      sync.Mutex
	pending *Report
}

func newPublisher(sink StatusSink, log *zap.Logger) *publisher {
	return &publisher{sink: sink, log: log, wake: make(chan struct{}, 1)}
}

// offer replaces the report waiting to be written; it never blocks.
func (p *publisher) offer(r Report) {
	p.mu.Lock()
	p.pending = &r
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run writes the newest pending report whenever there is one, until ctx
// ends.
func (p *publisher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		p.mu.Lock()
		r := p.pending
		p.pending = nil
		p.mu.Unlock()
		if r == nil {
			continue
		}
		if err := p.sink.Publish(ctx, *r); err != nil {
			p.log.Warn("publish status", zap.String("event", "statusPublishFailed"), zap.Error(err))
		}
	}
}
