package kube

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordclient "k8s.io/client-go/kubernetes/typed/coordination/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway"
)

// LeaseTimings are the per-segment election timings. RenewDeadline +
// RetryPeriod must stay below LeaseDuration: a holder that could not renew
// for RenewDeadline detaches its VLAN before any standby may consider the
// lease expired (self-fencing).
type LeaseTimings struct {
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// Validate refuses timings that would let two gateways attach at once.
func (t LeaseTimings) Validate() error {
	if t.LeaseDuration <= 0 || t.RenewDeadline <= 0 || t.RetryPeriod <= 0 {
		return fmt.Errorf("lease timings must be positive: duration %s, renew deadline %s, retry period %s", t.LeaseDuration, t.RenewDeadline, t.RetryPeriod)
	}
	if t.RenewDeadline+t.RetryPeriod >= t.LeaseDuration {
		return fmt.Errorf("lease renew deadline %s + retry period %s must be below lease duration %s, or a fenced gateway could still be attached when a standby takes over",
			t.RenewDeadline, t.RetryPeriod, t.LeaseDuration)
	}
	return nil
}

// Election runs one lease elector per segment. It holds leadership as
// "renewed within RenewDeadline" on the local monotonic clock, checked by a
// watchdog that does not wait on the API server: a gateway cut off from the
// API server stops leading on time even when every request hangs.
type Election struct {
	leases    coordclient.LeasesGetter
	namespace string
	identity  string
	timings   LeaseTimings
	log       *zap.Logger
	onChange  func()

	// fastPeriod is the renewal period while FastRenew is on (0: never).
	fastPeriod time.Duration

	mu      sync.Mutex
	running map[gateway.SegmentKey]*elector

	// spread is rule 9 (docs/ha.md "Spread"): nil until SetSpread.
	spread *spread
}

// SetFastRenewPeriod sets the renewal period used while FastRenew is on
// (LeaseAloneGrace/3); call before Sync.
func (e *Election) SetFastRenewPeriod(d time.Duration) { e.fastPeriod = d }

func (e *Election) elector(k gateway.SegmentKey) *elector {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running[k]
}

// Lease is what the last successful Lease call said about k.
func (e *Election) Lease(k gateway.SegmentKey) gateway.LeaseState {
	el := e.elector(k)
	if el == nil {
		return gateway.LeaseState{}
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.state
}

// AcquireNow makes k's elector take the Lease at once if its holder is
// still against on the resourceVersion it reads (the API server picks one
// winner among several standbys). Never blocks.
func (e *Election) AcquireNow(k gateway.SegmentKey, against string) {
	el := e.elector(k)
	if el == nil || against == "" || against == e.identity {
		return
	}
	el.mu.Lock()
	el.earlyAgainst = against
	el.mu.Unlock()
	select {
	case el.poke <- struct{}{}:
	default:
	}
}

// FastRenew switches k's renewals to the fast period and back; switched
// on, it renews at once (the grant K may be about to lapse).
func (e *Election) FastRenew(k gateway.SegmentKey, on bool) {
	el := e.elector(k)
	if el == nil {
		return
	}
	el.mu.Lock()
	start := on && !el.fast
	el.fast = on
	el.mu.Unlock()
	if start {
		select {
		case el.poke <- struct{}{}:
		default:
		}
	}
}

// NewElection returns an Election for identity (the node name). onChange is
// called (from elector goroutines; it must not block) whenever a segment's
// leadership changes.
func NewElection(leases coordclient.LeasesGetter, namespace, identity string, t LeaseTimings, log *zap.Logger, onChange func()) *Election {
	return &Election{leases: leases, namespace: namespace, identity: identity, timings: t, log: log,
		onChange: onChange, running: map[gateway.SegmentKey]*elector{}}
}

type elector struct {
	key    gateway.SegmentKey
	cancel context.CancelFunc
	done   chan struct{}
	// first is closed after the first acquire/renew attempt.
	first chan struct{}
	// poke asks for an attempt now (the lease changed).
	poke chan struct{}

	mu        sync.Mutex
	leading   bool
	lastRenew time.Time // local clock, last successful acquire/renew
	// lease is the object of our last successful write: release updates
	// it directly, one round trip instead of two.
	lease *coordinationv1.Lease
	apiOK bool

	// state is what the last successful call said (gateway.LeaseControl).
	state gateway.LeaseState
	// earlyAgainst: take the Lease at the next attempt if its holder is
	// still this one (a silent claiming holder, docs/ha.md).
	earlyAgainst string
	// fast: renew every fastPeriod (the peer rule does not carry).
	fast bool
	// observedRV/observedAt: when the lease record last changed, on our
	// clock; reset by our own API failures, so the expiry clock restarts
	// after an outage instead of firing at its end.
	observedRV string
	observedAt time.Time
	// freeSince: when this gateway, not the preferred holder, first saw
	// the Lease free (or was asked to take it early); it acquires only
	// SpreadDelay later (rule 9).
	freeSince time.Time
	// expiry wakes the elector when the holder's Lease runs out in our
	// observation: every candidate looks at that instant, not at its next
	// retry tick, so the preferred one is first (rule 9).
	expiry *time.Timer
	// rebalanceToken is the last AnnotationRebalance value read; a new
	// value read while holding asks for a handover.
	rebalanceToken string
	tokenRead      bool
	// lapsed: the last step-down was a lapse (not renewed in time, or
	// lost to another holder), not a release; cleared on leading again.
	lapsed bool
}

// Sync starts electors for new segments and stops (releasing the lease)
// those no longer wanted.
func (e *Election) Sync(ctx context.Context, keys []gateway.SegmentKey) {
	e.mu.Lock()
	want := map[gateway.SegmentKey]bool{}
	var started []*elector
	for _, k := range keys {
		want[k] = true
		if _, ok := e.running[k]; ok {
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		el := &elector{key: k, cancel: cancel, done: make(chan struct{}), first: make(chan struct{}), poke: make(chan struct{}, 1)}
		e.running[k] = el
		go e.run(cctx, el)
		started = append(started, el)
	}
	var stopped []*elector
	for k, el := range e.running {
		if !want[k] {
			el.cancel()
			stopped = append(stopped, el)
			delete(e.running, k)
		}
	}
	// Wait without the lock: Leading must answer meanwhile (the fence's
	// keep-alive asks it every few milliseconds).
	e.mu.Unlock()
	for _, el := range stopped {
		<-el.done
	}
	// A restarted holder must see that it still holds the lease before
	// the first plan, or it would detach a VLAN it keeps bridging.
	deadline := time.After(e.timings.RenewDeadline)
	for _, el := range started {
		select {
		case <-el.first:
		case <-deadline:
		case <-ctx.Done():
		}
	}
}

// lookup is the segment's running elector, nil if none.
func (e *Election) lookup(k gateway.SegmentKey) *elector {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running[k]
}

// Leading reports whether this gateway holds the segment's lease now.
func (e *Election) Leading(k gateway.SegmentKey) bool {
	el := e.lookup(k)
	if el == nil {
		return false
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.leading
}

// ValidFor is how much longer this gateway may act as the segment's active
// gateway without another successful renewal (0 when it does not lead):
// the kernel fence keeps the VLAN port alive exactly that long.
func (e *Election) ValidFor(k gateway.SegmentKey) time.Duration {
	e.mu.Lock()
	el := e.running[k]
	e.mu.Unlock()
	if el == nil {
		return 0
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	if !el.leading {
		return 0
	}
	left := e.timings.RenewDeadline - time.Since(el.lastRenew)
	if left < 0 {
		return 0
	}
	return left
}

// APIReachable is false when the last lease call of any elector failed.
func (e *Election) APIReachable() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, el := range e.running {
		el.mu.Lock()
		ok := el.apiOK
		el.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// Fenced reports whether this gateway stopped leading the segment because
// its lease lapsed (the Fenced cause) rather than by a release or handover.
func (e *Election) Fenced(k gateway.SegmentKey) bool {
	el := e.lookup(k)
	if el == nil {
		return false
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.lapsed && !el.leading
}

// lapse stops leading because the lease was not renewed in time.
func (e *Election) lapse(el *elector) {
	el.mu.Lock()
	if el.leading {
		el.lapsed = true
	}
	el.mu.Unlock()
	e.setLeading(el, false)
}

// Poke makes every elector try at once instead of at its next retry: a
// released lease is taken over in one round trip. Never blocks.
func (e *Election) Poke() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, el := range e.running {
		select {
		case el.poke <- struct{}{}:
		default:
		}
	}
}

// Release gives up every lease this gateway holds (planned drain), so
// standbys take over at once instead of waiting for expiry, and stops the
// electors.
func (e *Election) Release(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, el := range e.running {
		el.cancel()
		<-el.done
		delete(e.running, k)
	}
}

func (e *Election) setLeading(el *elector, leading bool) {
	el.mu.Lock()
	changed := el.leading != leading
	el.leading = leading
	if leading {
		el.lapsed = false
	}
	el.mu.Unlock()
	if changed {
		e.log.Info("segment lease", zap.String("event", "leadershipChanged"), zap.String("segment", el.key.String()), zap.Bool("leading", leading))
		e.onChange()
	}
}

func (e *Election) run(ctx context.Context, el *elector) {
	defer close(el.done)
	defer el.stopExpiry()
	t := e.timings
	tick := time.NewTicker(t.RetryPeriod)
	defer tick.Stop()
	// fastC ticks only when a fast period is set; attempts on it run only
	// while FastRenew is on and we hold the Lease.
	var fastC <-chan time.Time
	if e.fastPeriod > 0 {
		ft := time.NewTicker(e.fastPeriod)
		defer ft.Stop()
		fastC = ft.C
	}
	el.apiOK = true
	// The watchdog runs on its own goroutine: an attempt blocked on a slow
	// or silent API server must not delay the fencing decision.
	wdDone := make(chan struct{})
	defer func() { <-wdDone }()
	go e.watchdog(ctx, el, wdDone)

	e.attempt(ctx, el)
	close(el.first)
	for {
		select {
		case <-ctx.Done():
			e.release(el)
			return
		case <-tick.C:
			e.attempt(ctx, el)
		case <-fastC:
			el.mu.Lock()
			fast := el.fast && el.state.Held
			el.mu.Unlock()
			if fast {
				e.attempt(ctx, el)
			}
		case <-el.poke:
			// Our own renewals change the Lease and come back as pokes:
			// a holder that renewed just now has nothing to do.
			el.mu.Lock()
			period := t.RetryPeriod
			if el.fast && e.fastPeriod > 0 {
				period = e.fastPeriod
			}
			recent := el.state.Held && el.earlyAgainst == "" && time.Since(el.state.RenewedAt) < period/2
			el.mu.Unlock()
			if !recent {
				e.attempt(ctx, el)
			}
		}
	}
}

// watchdog stops leading when the last renewal is older than the renew
// deadline. It runs on its own goroutine: an attempt blocked on a slow or
// silent API server must not delay the fencing decision.
func (e *Election) watchdog(ctx context.Context, el *elector, done chan struct{}) {
	defer close(done)
	watchdog := time.NewTicker(e.timings.RetryPeriod / 2)
	defer watchdog.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-watchdog.C:
			el.mu.Lock()
			expired := el.leading && time.Since(el.lastRenew) > e.timings.RenewDeadline
			el.mu.Unlock()
			if expired {
				e.log.Warn("segment lease not renewed in time: fencing", zap.String("event", "leaseRenewMissed"), zap.String("segment", el.key.String()),
					zap.Duration("renewDeadline", e.timings.RenewDeadline))
				e.lapse(el)
			}
		}
	}
}

// observe records what a read Lease says: its holder, and when its record
// last changed on our clock; it takes the pending early-acquisition request.
func (e *Election) observe(el *elector, lease *coordinationv1.Lease, now time.Time) (holder string, observedAt time.Time, early string) {
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	if lease.ResourceVersion != el.observedRV {
		el.observedRV, el.observedAt = lease.ResourceVersion, now
	}
	early = el.earlyAgainst
	el.earlyAgainst = ""
	el.state.Holder = holder
	if holder != e.identity {
		el.state.Held = false
	}
	return holder, el.observedAt, early
}

// holderDuration is how long the holder's lease lasts: its own duration
// (it may run other settings), never less than ours.
func (e *Election) holderDuration(lease *coordinationv1.Lease, holder string) time.Duration {
	dur := e.timings.LeaseDuration
	if lease.Spec.LeaseDurationSeconds != nil && holder != e.identity {
		if d := time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second; d > dur {
			dur = d
		}
	}
	return dur
}

// attempt is one acquire or renew of the segment's Lease.
func (e *Election) attempt(ctx context.Context, el *elector) {
	cctx, cancel := context.WithTimeout(ctx, e.timings.RenewDeadline)
	defer cancel()
	now := time.Now()
	lease, err := e.leases.Leases(e.namespace).Get(cctx, nbv1.LeaseName(el.key), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// A new segment: nobody bridges it yet, and every gateway
		// creates its electors at once (a start-up burst of API calls):
		// the others wait a whole retry period for the preferred one.
		if e.spread != nil && e.deferToPreferred(el, now, e.timings.RetryPeriod, "", false) {
			e.apiResult(el, nil)
			return
		}
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: nbv1.LeaseName(el.key), Namespace: e.namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "netbridge-gateway"}}}
		e.fill(lease, now, true)
		created, err := e.leases.Leases(e.namespace).Create(cctx, lease, metav1.CreateOptions{})
		if err != nil {
			e.apiResult(el, err)
			return
		}
		e.renewed(el, now, created)
		return
	case err != nil:
		e.apiResult(el, err)
		return
	}
	holder, observedAt, early := e.observe(el, lease, now)
	prevSeen := observedAt
	dur := e.holderDuration(lease, holder)
	if e.rebalanceAsked(el, lease, holder) {
		e.handOver(cctx, el, lease)
		return
	}
	// Early: the holder was heard claiming and is silent past its
	// grants; the write is on the resourceVersion just read, so it
	// fails if anyone (the holder, another standby) wrote since.
	earlyOK := early != "" && holder == early
	free := holder == "" || holder == e.identity || now.After(observedAt.Add(dur)) || earlyOK
	if free && holder != e.identity && e.spread != nil && e.deferToPreferred(el, now, e.spread.delay, early, earlyOK) {
		e.apiResult(el, nil)
		return
	}
	if !free || holder == e.identity {
		el.mu.Lock()
		el.freeSince = time.Time{}
		el.mu.Unlock()
	}
	if !free {
		e.wakeAtExpiry(el, observedAt.Add(dur).Sub(now))
		e.apiResult(el, nil)
		if el.isLeading() {
			// Someone else holds it: we lost it (e.g. our renewals
			// did not land). Stop leading now.
			e.lapse(el)
		}
		return
	}
	takeover := holder != e.identity
	e.fill(lease, now, takeover)
	updated, err := e.leases.Leases(e.namespace).Update(cctx, lease, metav1.UpdateOptions{})
	if err != nil {
		e.apiResult(el, err)
		return
	}
	if takeover {
		e.log.Info("segment lease acquired", zap.String("event", "leaseAcquired"), zap.String("segment", el.key.String()),
			zap.String("previousHolder", holder), zap.Bool("early", earlyOK))
	}
	e.renewed(el, now, updated)
	if takeover {
		el.mu.Lock()
		el.state.PrevSeenAt = prevSeen
		el.mu.Unlock()
	}
}

func (el *elector) isLeading() bool {
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.leading
}

func (e *Election) fill(l *coordinationv1.Lease, now time.Time, takeover bool) {
	id := e.identity
	secs := int32((e.timings.LeaseDuration + time.Second - 1) / time.Second)
	mt := metav1.NewMicroTime(now)
	l.Spec.HolderIdentity = &id
	l.Spec.LeaseDurationSeconds = &secs
	l.Spec.RenewTime = &mt
	if takeover || l.Spec.AcquireTime == nil {
		l.Spec.AcquireTime = &mt
		n := int32(0)
		if l.Spec.LeaseTransitions != nil {
			n = *l.Spec.LeaseTransitions + 1
		}
		l.Spec.LeaseTransitions = &n
	}
}

func (e *Election) renewed(el *elector, at time.Time, lease *coordinationv1.Lease) {
	if time.Since(at) >= e.timings.RenewDeadline {
		// The write landed, but its attempt began a renew deadline ago:
		// leading on it would only flap (the watchdog fences at once).
		// The next attempt renews afresh.
		el.mu.Lock()
		el.lease = lease
		el.mu.Unlock()
		return
	}
	el.mu.Lock()
	el.lastRenew = at
	el.lease = lease
	el.apiOK = true
	epoch := uint64(0)
	if lease.Spec.LeaseTransitions != nil && *lease.Spec.LeaseTransitions > 0 {
		epoch = uint64(*lease.Spec.LeaseTransitions)
	}
	if !el.state.Held || el.state.Epoch != epoch {
		el.state.AcquiredAt = time.Now()
	}
	prev := el.state.PrevSeenAt
	if !el.state.Held || el.state.Epoch != epoch {
		prev = time.Time{}
	}
	el.state = gateway.LeaseState{Held: true, Epoch: epoch, AcquiredAt: el.state.AcquiredAt, RenewedAt: at, Holder: e.identity, PrevSeenAt: prev}
	el.mu.Unlock()
	if ce := e.log.Check(zap.DebugLevel, "lease renewed"); ce != nil {
		ce.Write(zap.String("segment", el.key.String()), zap.Uint64("epoch", epoch), zap.Duration("took", time.Since(at)))
	}
	e.setLeading(el, true)
}

func (e *Election) apiResult(el *elector, err error) {
	el.mu.Lock()
	was := el.apiOK
	el.apiOK = err == nil
	if err != nil {
		// Our own failure: the holder's renewals may have gone unseen.
		el.observedRV = ""
	}
	el.mu.Unlock()
	if err != nil && was {
		e.log.Warn("segment lease call failed", zap.String("event", "leaseCallFailed"), zap.String("segment", el.key.String()), zap.Error(err))
		e.onChange()
	}
	if err == nil && !was {
		e.onChange()
	}
}

// release hands the lease over: holder cleared so a standby acquires at
// its next retry instead of after expiry. Best effort, bounded.
func (e *Election) release(el *elector) {
	el.mu.Lock()
	el.state.Held = false
	el.mu.Unlock()
	if !el.isLeading() {
		return
	}
	e.setLeading(el, false)
	ctx, cancel := context.WithTimeout(context.Background(), e.timings.RenewDeadline)
	defer cancel()
	el.mu.Lock()
	lease := el.lease.DeepCopy()
	el.mu.Unlock()
	empty := ""
	if lease != nil {
		lease.Spec.HolderIdentity = &empty
		if _, err := e.leases.Leases(e.namespace).Update(ctx, lease, metav1.UpdateOptions{}); err == nil {
			e.log.Info("segment lease released", zap.String("event", "leaseReleased"), zap.String("segment", el.key.String()))
			return
		}
	}
	// Our copy was stale (or missing): read, check we still hold it, write.
	lease, err := e.leases.Leases(e.namespace).Get(ctx, nbv1.LeaseName(el.key), metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != e.identity {
		return
	}
	lease.Spec.HolderIdentity = &empty
	if _, err := e.leases.Leases(e.namespace).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		e.log.Warn("release segment lease", zap.String("event", "leaseReleaseFailed"), zap.String("segment", el.key.String()), zap.Error(err))
		return
	}
	e.log.Info("segment lease released", zap.String("event", "leaseReleased"), zap.String("segment", el.key.String()))
}
