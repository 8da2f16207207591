package kube

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway"
)

// DefaultSpreadDelay is how long a gateway that is not a free Lease's
// preferred holder waits before taking it (rule 9): long enough for the
// preferred one's watch event and write (milliseconds), short against the
// Lease's own expiry. It never delays a takeover whose standby is the only
// healthy candidate left (that one is preferred).
const DefaultSpreadDelay = 300 * time.Millisecond

// spread is rule 9: the segments' candidates and who of them is healthy.
type spread struct {
	alive func(gateway string) bool
	delay time.Duration

	mu         sync.Mutex
	candidates map[gateway.SegmentKey][]string
}

// SetSpread turns on rule 9 (docs/ha.md "Spread"): a free Lease is taken
// first by its preferred gateway (nbv1.PreferredGateway over the healthy
// candidates: this gateway, and every other candidate for which alive
// says true; nil alive counts them all), the others wait delay; a Lease
// annotated with a new nbv1.AnnotationRebalance value is handed over by a
// holder that is not preferred. A healthy holder is never preempted.
// Call before the first Sync.
func (e *Election) SetSpread(alive func(gateway string) bool, delay time.Duration) {
	e.spread = &spread{alive: alive, delay: delay, candidates: map[gateway.SegmentKey][]string{}}
}

// SetCandidates sets every segment's Lease candidates (the gateways its
// BridgeConfig selects). Segments without candidates are not spread.
func (e *Election) SetCandidates(c map[gateway.SegmentKey][]string) {
	if e.spread == nil {
		return
	}
	e.spread.mu.Lock()
	defer e.spread.mu.Unlock()
	e.spread.candidates = c
}

// PokeLease makes the elector of the named Lease try at once (its watch
// event): a released Lease is taken in one round trip. Never blocks.
func (e *Election) PokeLease(name string) {
	k, err := nbv1.ParseLeaseName(name)
	if err != nil {
		return
	}
	if el := e.elector(k); el != nil {
		el.wake()
	}
}

func (el *elector) wake() {
	select {
	case el.poke <- struct{}{}:
	default:
	}
}

// preferredHolder is k's preferred gateway among its healthy candidates,
// "" when rule 9 is off or k's candidates are unknown.
func (e *Election) preferredHolder(k gateway.SegmentKey) string {
	sp := e.spread
	if sp == nil {
		return ""
	}
	sp.mu.Lock()
	cands := sp.candidates[k]
	sp.mu.Unlock()
	if len(cands) == 0 {
		return ""
	}
	healthy := []string{e.identity}
	for _, c := range cands {
		if c != e.identity && (sp.alive == nil || sp.alive(c)) {
			healthy = append(healthy, c)
		}
	}
	return nbv1.PreferredGateway(k, healthy)
}

// deferToPreferred: the Lease is free (or to be taken early) and another
// healthy gateway is preferred for it: wait delay from the first time this
// gateway saw it so, then take it anyway (the preferred one may be slow or
// gone). A pending early request is kept for that attempt.
func (e *Election) deferToPreferred(el *elector, now time.Time, delay time.Duration, early string, earlyOK bool) bool {
	pref := e.preferredHolder(el.key)
	if pref == "" || pref == e.identity {
		return false
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	if el.freeSince.IsZero() {
		el.freeSince = now
		if ce := e.log.Check(zap.DebugLevel, "free lease: deferring to its preferred gateway"); ce != nil {
			ce.Write(zap.String("event", "spreadDeferred"), zap.String("segment", el.key.String()), zap.String("preferred", pref))
		}
	}
	left := el.freeSince.Add(delay).Sub(now)
	if left <= 0 {
		return false
	}
	if earlyOK {
		el.earlyAgainst = early
	}
	time.AfterFunc(left, el.wake)
	return true
}

// rebalanceAsked: this gateway holds the Lease, read a new rebalance token
// on it, and another healthy gateway is preferred. The first token read is
// only recorded: an old request must not move segments after a restart. A
// holder that does not lead right now (a renewal missed under load) keeps
// the token pending and looks again at its next attempt.
func (e *Election) rebalanceAsked(el *elector, lease *coordinationv1.Lease, holder string) bool {
	if e.spread == nil {
		return false
	}
	tok := lease.Annotations[nbv1.AnnotationRebalance]
	el.mu.Lock()
	fresh := el.tokenRead && tok != el.rebalanceToken
	el.tokenRead = true
	pending := fresh && holder == e.identity && !el.leading
	if !pending {
		el.rebalanceToken = tok
	}
	el.mu.Unlock()
	if !fresh || pending || tok == "" || holder != e.identity {
		return false
	}
	pref := e.preferredHolder(el.key)
	return pref != "" && pref != e.identity
}

// handOver is the planned handover of one segment (a rebalance): stop
// leading (the agent detaches on the pass this triggers, and with the peer
// channel the new holder also waits for our fresh yield), wait SpreadDelay
// for that pass, then clear the holder so the preferred gateway takes the
// Lease in one round trip. This gateway then defers to it like any other
// non-preferred one, a retry period longer.
func (e *Election) handOver(ctx context.Context, el *elector, lease *coordinationv1.Lease) {
	pref := e.preferredHolder(el.key)
	e.log.Info("rebalance: handing the segment over to its preferred gateway", zap.String("event", "rebalanceHandover"),
		zap.String("segment", el.key.String()), zap.String("preferred", pref))
	el.mu.Lock()
	el.state.Held = false
	el.mu.Unlock()
	e.setLeading(el, false)
	select {
	case <-ctx.Done():
	case <-time.After(e.spread.delay):
	}
	empty := ""
	lease.Spec.HolderIdentity = &empty
	_, err := e.leases.Leases(e.namespace).Update(ctx, lease, metav1.UpdateOptions{})
	e.apiResult(el, err)
	if err != nil {
		// Our record still names us: the next attempt renews it and we
		// lead again; the token is spent, so no handover loop.
		e.log.Warn("rebalance: handover write failed", zap.String("event", "rebalanceHandoverFailed"),
			zap.String("segment", el.key.String()), zap.Error(err))
		return
	}
	// We gave it away on purpose: wait a retry period longer than the
	// others before taking it back (the preferred one may be slow).
	el.mu.Lock()
	el.freeSince = time.Now().Add(e.timings.RetryPeriod)
	el.mu.Unlock()
}

// wakeAtExpiry (re)arms the elector's expiry timer to fire just after the
// holder's Lease runs out in our observation.
func (e *Election) wakeAtExpiry(el *elector, left time.Duration) {
	left += time.Millisecond
	el.mu.Lock()
	defer el.mu.Unlock()
	if el.expiry == nil {
		el.expiry = time.AfterFunc(left, el.wake)
		return
	}
	el.expiry.Reset(left)
}

func (el *elector) stopExpiry() {
	el.mu.Lock()
	defer el.mu.Unlock()
	if el.expiry != nil {
		el.expiry.Stop()
	}
}
