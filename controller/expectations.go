package controller

import (
	"sync"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// expectationTTL bounds how long a create is believed without the cache
// showing it: an endpoint deleted right after its create may never appear
// in the informer (the watch can coalesce both), and is then created again.
const expectationTTL = 30 * time.Second

// createExpectations remembers, per segment, the endpoints this controller
// created (or found already there) until the informer cache shows them —
// controller-runtime's expectations pattern. Under load the cache can lag
// past the reconcile's cache-wait; without this the next reconcile plans
// from the stale cache and POSTs the same endpoints again (AlreadyExists).
// The workqueue runs one reconcile per segment at a time; the mutex only
// guards the map shared by the segments.
type createExpectations struct {
	mu      sync.Mutex
	pending map[SegmentKey]map[string]time.Time // namespace/name → expiry
}

func newCreateExpectations() *createExpectations {
	return &createExpectations{pending: map[SegmentKey]map[string]time.Time{}}
}

// expect records that name (namespace/name) exists in the API server.
func (e *createExpectations) expect(key SegmentKey, name string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending[key] == nil {
		e.pending[key] = map[string]time.Time{}
	}
	e.pending[key][name] = now.Add(expectationTTL)
}

// hold drops from plan the creates the cache has not caught up with yet
// and returns how many it held back.
func (e *createExpectations) hold(key SegmentKey, plan *SegmentPlan, existing []*nbv1.BridgeEndpoint, now time.Time) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	keep, held, left := holdPendingCreates(plan.Create, existing, e.pending[key], now)
	plan.Create = keep
	if len(left) == 0 {
		delete(e.pending, key)
	} else {
		e.pending[key] = left
	}
	return held
}

// holdPendingCreates is the pure part of hold: an expectation ends when the
// cache shows the endpoint or when it expires; a create of a name still
// expected is held back (the object exists, the cache is behind).
func holdPendingCreates(create, existing []*nbv1.BridgeEndpoint, pending map[string]time.Time, now time.Time) (
	keep []*nbv1.BridgeEndpoint, held int, left map[string]time.Time) {
	if len(pending) == 0 {
		return create, 0, nil
	}
	seen := make(map[string]bool, len(existing))
	for _, ep := range existing {
		seen[ep.Namespace+"/"+ep.Name] = true
	}
	left = map[string]time.Time{}
	for name, until := range pending {
		if !seen[name] && now.Before(until) {
			left[name] = until
		}
	}
	keep = make([]*nbv1.BridgeEndpoint, 0, len(create))
	for _, ep := range create {
		if _, ok := left[ep.Namespace+"/"+ep.Name]; ok {
			held++
			continue
		}
		keep = append(keep, ep)
	}
	return keep, held, left
}
