package controller_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

// TestFollowerTakesOverFromKilledLeader runs two controller processes with
// the shipped leader-election timings and kills the leader with SIGKILL: it
// never releases its Lease, and the follower must take it over as soon as
// it may be taken (lease duration after the last renewal it saw, at its
// retry period's granularity), then converge.
func TestFollowerTakesOverFromKilledLeader(t *testing.T) {
	const (
		leaseDuration = 15 * time.Second // the shipped flags
		retryPeriod   = 2 * time.Second
		leaseID       = "netbridge-controller-t19"
	)
	bc := bridgeConfig("t19", map[string]string{"netbridge.io/gateway": "t19"},
		nbv1.Segment{Name: "app", VLANID: 209, VNI: 10209, Subnets: []string{"10.209.0.0/24"}})
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)
	createNamespace(t, "t19-vms", nil)
	bin := buildController(t)

	a := startController(t, bin, env.Kubeconfig, leaseID, true)
	a.waitEvent(t, 30*time.Second, "leaderElected")
	b := startController(t, bin, env.Kubeconfig, leaseID, true)
	createVMI(t, "t19-vms", "vm1", "t19.app", map[string]string{nbv1.AnnotationIPs: "10.209.0.10"}, kubevirt.Status{NodeName: "n"})
	eventually(t, 10*time.Second, "endpoint by the first leader", func() error { _, err := getEndpoint("t19-vms", "vm1-default"); return err })
	// Let the follower see a few renewals, as in a running deployment.
	time.Sleep(2 * retryPeriod)
	if b.count("leaderElected") != 0 {
		t.Fatal("the follower leads while the leader is alive")
	}

	var before coordinationv1.Lease
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: controller.DefaultNamespace, Name: leaseID}, &before); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	// client-go's follower polls every retry period with jitter 1.2 (2 to
	// 4.4 s): it sees the last renewal up to one poll late and acquires on
	// the first poll after that plus the lease duration.
	poll := retryPeriod * 22 / 10
	bound := leaseDuration + 2*poll + time.Second
	eventually(t, bound+time.Second, "follower leads", func() error {
		if b.count("leaderElected") == 0 {
			return fmt.Errorf("not elected")
		}
		return nil
	})
	takeover := time.Since(killed)
	if takeover < leaseDuration-retryPeriod {
		t.Fatalf("takeover after %s: before the killed leader's lease (%s) could have expired", takeover, leaseDuration)
	}
	if takeover > bound {
		t.Fatalf("takeover after %s, want within %s (lease duration + two jittered polls)", takeover, bound)
	}
	var after coordinationv1.Lease
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: controller.DefaultNamespace, Name: leaseID}, &after); err != nil {
		t.Fatal(err)
	}
	if *after.Spec.HolderIdentity == *before.Spec.HolderIdentity {
		t.Fatalf("lease still held by %s", *after.Spec.HolderIdentity)
	}

	elected := time.Now()
	createVMI(t, "t19-vms", "vm2", "t19.app", map[string]string{nbv1.AnnotationIPs: "10.209.0.11"}, kubevirt.Status{NodeName: "n"})
	eventually(t, 2*catchupGoal, "new leader converges", func() error { _, err := getEndpoint("t19-vms", "vm2-default"); return err })
	t.Logf("takeover_ms=%d converge_ms=%d lease_duration_ms=%d", takeover.Milliseconds(), time.Since(elected).Milliseconds(), leaseDuration.Milliseconds())
}
