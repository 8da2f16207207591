package kube_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/gateway/kube"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

// TestElectionKeepsValidity: while a gateway holds a segment's lease and
// the API server answers, its remaining validity (what the kernel fence
// keeps the VLAN port alive for) never drops to zero, even with short
// timings; a second gateway never leads at the same time.
func TestElectionKeepsValidity(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "netbridge-system"}}); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	timings := kube.LeaseTimings{LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}
	key := gateway.SegmentKey{BridgeConfig: "lab", Segment: "app"}
	a := kube.NewElection(cs.CoordinationV1(), "netbridge-system", "gw1", timings, zaptest.NewLogger(t), func() {})
	b := kube.NewElection(cs.CoordinationV1(), "netbridge-system", "gw2", timings, zaptest.NewLogger(t), func() {})
	a.Sync(ctx, []gateway.SegmentKey{key})
	time.Sleep(200 * time.Millisecond)
	b.Sync(ctx, []gateway.SegmentKey{key})
	if !a.Leading(key) {
		t.Fatal("the first gateway should lead")
	}
	var minValid time.Duration = time.Hour
	for i := 0; i < 100; i++ {
		v := a.ValidFor(key)
		if v < minValid {
			minValid = v
		}
		if b.Leading(key) {
			t.Fatal("both gateways lead")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("lowest remaining validity over 2 s: %s (renew deadline %s)", minValid, timings.RenewDeadline)
	if minValid <= 0 {
		t.Fatalf("validity dropped to zero while the lease was renewed")
	}
	// Hand-over on release: the other gateway leads within a few retries.
	start := time.Now()
	a.Release(ctx)
	for !b.Leading(key) {
		if time.Since(start) > 3*time.Second {
			t.Fatal("the standby did not take the released lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("released lease taken over in %s", time.Since(start).Round(time.Millisecond))
}

// TestElectionEarlyAcquireAndFastRenew: AcquireNow takes the Lease at once
// from the named holder (epoch = leaseTransitions, +1), the old holder's
// next read shows it lost, and FastRenew keeps the renewals (L of
// docs/ha.md) fresher than LeaseAloneGrace.
func TestElectionEarlyAcquireAndFastRenew(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "netbridge-system"}}); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	timings := kube.LeaseTimings{LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	key := gateway.SegmentKey{BridgeConfig: "lab", Segment: "app"}
	a := kube.NewElection(cs.CoordinationV1(), "netbridge-system", "gw1", timings, zaptest.NewLogger(t), func() {})
	b := kube.NewElection(cs.CoordinationV1(), "netbridge-system", "gw2", timings, zaptest.NewLogger(t), func() {})
	b.SetFastRenewPeriod(30 * time.Millisecond)
	a.Sync(ctx, []gateway.SegmentKey{key})
	b.Sync(ctx, []gateway.SegmentKey{key})
	if la := a.Lease(key); !la.Held || la.Epoch != 0 {
		t.Fatalf("first holder: %+v", la)
	}
	if lb := b.Lease(key); lb.Held || lb.Holder != "gw1" {
		t.Fatalf("standby: %+v", lb)
	}
	b.AcquireNow(key, "gw3") // not the holder: nothing happens
	b.AcquireNow(key, "gw1")
	start := time.Now()
	for !b.Lease(key).Held {
		if time.Since(start) > 2*time.Second {
			t.Fatal("AcquireNow did not take the lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("early_acquire_ms=%d", time.Since(start).Milliseconds())
	if lb := b.Lease(key); lb.Epoch != 1 || lb.PrevSeenAt.IsZero() || lb.PrevSeenAt.After(lb.AcquiredAt) {
		t.Fatalf("after early acquisition: %+v, want epoch 1 and the previous holder's last write seen before T", lb)
	}
	b.FastRenew(key, true)
	var maxAge time.Duration
	for i := 0; i < 50; i++ {
		time.Sleep(20 * time.Millisecond)
		if age := time.Since(b.Lease(key).RenewedAt); age > maxAge {
			maxAge = age
		}
	}
	t.Logf("fast_renew_max_age_ms=%d", maxAge.Milliseconds())
	if maxAge > 100*time.Millisecond {
		t.Fatalf("renewal age reached %s with fast renewals every 30ms", maxAge)
	}
	// The old holder learns it at its next attempt (RetryPeriod).
	deadline := time.Now().Add(3 * time.Second)
	for a.Lease(key).Held {
		if time.Now().After(deadline) {
			t.Fatal("old holder still thinks it holds the lease")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for a.Leading(key) {
		if time.Now().After(deadline) {
			t.Fatal("old holder still leads")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Lost, not released: the cause the Fenced event names.
	if !a.Fenced(key) {
		t.Error("the old holder lost its lease to gw2 but does not report it Fenced")
	}
	if b.Fenced(key) {
		t.Error("the new holder reports Fenced")
	}
}
