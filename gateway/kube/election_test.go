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
