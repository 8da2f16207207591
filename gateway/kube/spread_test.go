package kube_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/gateway/kube"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

// spreadBound is the largest max−min of active segments per gateway this
// test accepts for 100 segments: HRW gives each gateway a binomial share
// (σ ≈ 4.7 for a third of 100), so the rendezvous hash alone spreads
// 100 segments over 3 gateways within about ±2σ.
const spreadBound = 15

// hangTransport makes a gateway's API calls hang while dead is set (its
// packets dropped), as a node that lost power looks to the API server.
type hangTransport struct {
	rt   http.RoundTripper
	dead *atomic.Bool
}

func (h hangTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.dead.Load() {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return h.rt.RoundTrip(r)
}

// holding is one Lease as the API server has it.
type holding struct {
	holder string
	epoch  int32
}

// TestSpreadFailoverNoPreemptionRebalance (rule 9): three gateways elect
// 100 segments on a real API server. The active roles spread by the
// rendezvous hash; when one gateway dies (its API calls hang, the peer
// channel calls it dead) only its segments move, split between the other
// two; when it comes back nothing moves (no preemption); a planned
// rebalance (the Lease annotation) hands exactly its preferred segments
// back to it.
func TestSpreadFailoverNoPreemptionRebalance(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "netbridge-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	names := []string{"gw1", "gw2", "gw3"}
	var keys []gateway.SegmentKey
	cands := map[gateway.SegmentKey][]string{}
	for i := 0; i < 100; i++ {
		k := gateway.SegmentKey{BridgeConfig: "spread", Segment: fmt.Sprintf("seg%d", i)}
		keys = append(keys, k)
		cands[k] = names
	}
	// The peer channel's view, shared: a dead gateway is dead to all.
	var amu sync.Mutex
	alive := map[string]bool{"gw1": true, "gw2": true, "gw3": true}
	isAlive := func(n string) bool { amu.Lock(); defer amu.Unlock(); return alive[n] }
	setAlive := func(n string, v bool) { amu.Lock(); defer amu.Unlock(); alive[n] = v }

	timings := kube.LeaseTimings{LeaseDuration: 6 * time.Second, RenewDeadline: 4 * time.Second, RetryPeriod: 2 * time.Second}
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	dead := map[string]*atomic.Bool{}
	elections := map[string]*kube.Election{}
	for _, n := range names {
		dead[n] = &atomic.Bool{}
		cfg := rest.CopyConfig(env.Config)
		cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
		d := dead[n]
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return hangTransport{rt: rt, dead: d} }
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		e := kube.NewElection(cs.CoordinationV1(), ns, n, timings, log.Named(n), func() {})
		e.SetSpread(isAlive, kube.DefaultSpreadDelay)
		e.SetCandidates(cands)
		elections[n] = e
	}
	// The Lease watch pokes each segment's elector, as the agent's
	// informer does (gateway/daemon: Source.Start → PokeLease); a dead
	// gateway's watch is dead too.
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	inf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	poke := func(obj any) {
		l, ok := obj.(*coordinationv1.Lease)
		if !ok {
			return
		}
		for n, e := range elections {
			if !dead[n].Load() {
				e.PokeLease(l.Name)
			}
		}
	}
	if _, err := inf.Coordination().V1().Leases().Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }}); err != nil {
		t.Fatal(err)
	}
	inf.Start(ctx.Done())
	inf.WaitForCacheSync(ctx.Done())

	var wg sync.WaitGroup
	for _, e := range elections {
		wg.Add(1)
		go func() { defer wg.Done(); e.Sync(ctx, keys) }()
	}
	wg.Wait()

	snapshot := func() map[gateway.SegmentKey]holding {
		var list coordinationv1.LeaseList
		if err := env.Client.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		out := map[gateway.SegmentKey]holding{}
		for _, l := range list.Items {
			k, err := nbv1.ParseLeaseName(l.Name)
			if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
				continue
			}
			out[k] = holding{holder: *l.Spec.HolderIdentity, epoch: *l.Spec.LeaseTransitions}
		}
		return out
	}
	spreadOf := func(s map[gateway.SegmentKey]holding) (string, int, map[string]int) {
		count := map[string]int{}
		for _, h := range s {
			count[h.holder]++
		}
		lo, hi := len(keys), 0
		for _, n := range names {
			if dead[n].Load() || !isAlive(n) {
				continue
			}
			lo, hi = min(lo, count[n]), max(hi, count[n])
		}
		return fmt.Sprintf("%d/%d/%d", count["gw1"], count["gw2"], count["gw3"]), hi - lo, count
	}
	preferredShare := func(s map[gateway.SegmentKey]holding, among []string) int {
		n := 0
		for _, k := range keys {
			if s[k].holder == nbv1.PreferredGateway(k, among) {
				n++
			}
		}
		return n
	}
	// settle waits until every segment is held by one of holders and the
	// Leases stopped changing for two retry periods.
	settle := func(phase string, holders []string, within time.Duration) map[gateway.SegmentKey]holding {
		t.Helper()
		ok := map[string]bool{}
		for _, h := range holders {
			ok[h] = true
		}
		deadline := time.Now().Add(within)
		var last map[gateway.SegmentKey]holding
		var stableSince time.Time
		for time.Now().Before(deadline) {
			s := snapshot()
			all := len(s) == len(keys)
			for _, h := range s {
				all = all && ok[h.holder]
			}
			if !all || !equalHoldings(s, last) {
				last, stableSince = s, time.Now()
			} else if time.Since(stableSince) > timings.RetryPeriod*2 {
				return s
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("%s: segments not settled on %v within %s: %d held", phase, holders, within, len(last))
		return nil
	}

	before := settle("start", names, 30*time.Second)
	spread, diff, _ := spreadOf(before)
	pref := preferredShare(before, names)
	t.Logf("phase=start spread=%s max_minus_min=%d preferred=%d/100", spread, diff, pref)
	if diff > spreadBound || pref < 90 {
		t.Errorf("start: spread %s (max−min %d, bound %d), %d of 100 on their preferred gateway (want ≥ 90)", spread, diff, spreadBound, pref)
	}

	// gw3 dies: its API calls hang, the peer channel calls it dead.
	killed := time.Now()
	dead["gw3"].Store(true)
	setAlive("gw3", false)
	after := settle("gw3 dead", []string{"gw1", "gw2"}, timings.LeaseDuration+30*time.Second)
	spread, diff, _ = spreadOf(after)
	moved, preempted, movedPref := 0, 0, 0
	for _, k := range keys {
		b, a := before[k], after[k]
		switch {
		case b.holder == "gw3":
			moved++
			if a.holder == nbv1.PreferredGateway(k, []string{"gw1", "gw2"}) {
				movedPref++
			}
		case a != b:
			preempted++
		}
	}
	t.Logf("phase=gw3_dead spread=%s max_minus_min=%d moved=%d moved_to_preferred=%d preempted=%d settled_ms=%d",
		spread, diff, moved, movedPref, preempted, time.Since(killed).Milliseconds())
	if preempted != 0 {
		t.Errorf("gw3 dead: %d segments of the live gateways changed holder or epoch", preempted)
	}
	if diff > spreadBound || movedPref < moved*9/10 {
		t.Errorf("gw3 dead: spread %s (max−min %d, bound %d), %d of gw3's %d segments went to their preferred survivor",
			spread, diff, spreadBound, movedPref, moved)
	}

	// gw3 comes back: reachable, alive on the peer channel. Nothing moves.
	dead["gw3"].Store(false)
	setAlive("gw3", true)
	time.Sleep(3 * timings.RetryPeriod)
	back := snapshot()
	spread, _, _ = spreadOf(back)
	preempted = 0
	for _, k := range keys {
		if back[k] != after[k] {
			preempted++
		}
	}
	t.Logf("phase=gw3_back spread=%s preempted=%d", spread, preempted)
	if preempted != 0 {
		t.Errorf("gw3 back: %d segments moved without a rebalance (preemption)", preempted)
	}

	// Planned rebalance: the operator annotates every Lease.
	start := time.Now()
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:"r1"}}}`, nbv1.AnnotationRebalance))
	for _, k := range keys {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: nbv1.LeaseName(k), Namespace: ns}}
		if err := env.Client.Patch(ctx, l, client.RawPatch(types.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
	}
	rebalanced := settle("rebalance", names, 30*time.Second)
	spread, diff, _ = spreadOf(rebalanced)
	pref = preferredShare(rebalanced, names)
	handed, wrong := 0, 0
	for _, k := range keys {
		b, a := back[k], rebalanced[k]
		if b.holder == nbv1.PreferredGateway(k, names) && a != b {
			wrong++ // a segment already on its preferred gateway moved
		}
		if a.holder != b.holder {
			handed++
			if elections[b.holder].Fenced(k) {
				t.Errorf("%s handed %s over on a rebalance, yet reports it Fenced", b.holder, k)
			}
		}
	}
	t.Logf("phase=rebalanced spread=%s max_minus_min=%d preferred=%d/100 handed_over=%d needlessly_moved=%d settled_ms=%d",
		spread, diff, pref, handed, wrong, time.Since(start).Milliseconds())
	if wrong != 0 {
		t.Errorf("rebalance moved %d segments that were on their preferred gateway", wrong)
	}
	if diff > spreadBound || pref < 90 {
		t.Errorf("rebalanced: spread %s (max−min %d, bound %d), %d of 100 on their preferred gateway (want ≥ 90)", spread, diff, spreadBound, pref)
	}
}

func equalHoldings(a, b map[gateway.SegmentKey]holding) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestSpreadNeverDelaysTheLastStandby: a standby asked to take a Lease
// early (its holder silent) waits SpreadDelay only while another healthy
// gateway is preferred; when the silent holder was the preferred one and
// this standby is the only healthy candidate left, it takes the Lease at
// once — the failover budget of two-gateway segments is unchanged.
func TestSpreadNeverDelaysTheLastStandby(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "netbridge-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"gw1", "gw2", "gw3"}
	// Two segments whose preferred gateway among all three is gw1.
	var keys []gateway.SegmentKey
	for i := 0; len(keys) < 2; i++ {
		k := gateway.SegmentKey{BridgeConfig: "last", Segment: fmt.Sprintf("seg%d", i)}
		if nbv1.PreferredGateway(k, names) == "gw1" {
			keys = append(keys, k)
		}
	}
	var amu sync.Mutex
	alive := map[string]bool{"gw1": true, "gw2": true, "gw3": true}
	isAlive := func(n string) bool { amu.Lock(); defer amu.Unlock(); return alive[n] }
	timings := kube.LeaseTimings{LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	el := map[string]*kube.Election{}
	for _, n := range names {
		e := kube.NewElection(cs.CoordinationV1(), ns, n, timings, log.Named(n), func() {})
		e.SetSpread(isAlive, kube.DefaultSpreadDelay)
		cands := map[gateway.SegmentKey][]string{}
		for _, k := range keys {
			cands[k] = names
		}
		e.SetCandidates(cands)
		el[n] = e
	}
	el["gw1"].Sync(ctx, keys)
	el["gw2"].Sync(ctx, keys)
	el["gw3"].Sync(ctx, keys)
	for _, k := range keys {
		if !el["gw1"].Lease(k).Held {
			t.Fatalf("%s: gw1 (preferred) does not hold it", k)
		}
	}
	early := func(n string, k gateway.SegmentKey) time.Duration {
		start := time.Now()
		el[n].AcquireNow(k, "gw1")
		for !el[n].Lease(k).Held {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s did not take %s early", n, k)
			}
			time.Sleep(2 * time.Millisecond)
		}
		return time.Since(start)
	}
	// gw1 silent but gw3 alive and (say) preferred among gw2/gw3: whoever
	// is not preferred among the healthy waits.
	amu.Lock()
	alive["gw1"] = false
	amu.Unlock()
	k0 := keys[0]
	pref := nbv1.PreferredGateway(k0, []string{"gw2", "gw3"})
	other := map[string]string{"gw2": "gw3", "gw3": "gw2"}[pref]
	waited := early(other, k0)
	t.Logf("nonpreferred_early_acquire_ms=%d spread_delay_ms=%d", waited.Milliseconds(), kube.DefaultSpreadDelay.Milliseconds())
	if waited < kube.DefaultSpreadDelay {
		t.Errorf("%s is not preferred for %s among the healthy yet took it after %s, before SpreadDelay", other, k0, waited)
	}
	// gw1 silent and gw3 dead too: gw2 is the last standby and never waits.
	amu.Lock()
	alive["gw3"] = false
	amu.Unlock()
	k1 := keys[1]
	took := early("gw2", k1)
	t.Logf("last_standby_early_acquire_ms=%d", took.Milliseconds())
	if took >= kube.DefaultSpreadDelay {
		t.Errorf("the last healthy standby took %s to acquire early: it waited for a dead preferred gateway", took)
	}
}
