package controller_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
)

func elected(r *running) bool {
	select {
	case <-r.mgr.Elected():
		return true
	default:
		return false
	}
}

// TestLeaderElection runs two controllers: only the leader writes; when it
// stops, the other takes over and converges.
func TestLeaderElection(t *testing.T) {
	bc := bridgeConfig("t2", map[string]string{"netbridge.io/gateway": "t2"},
		nbv1.Segment{Name: "app", VLANID: 201, VNI: 10201, Subnets: []string{"10.201.0.0/24"}})
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)
	createNamespace(t, "t2-vms", nil)

	cfg := controller.Config{
		LeaderElect: true, LeaderElectionID: "netbridge-controller-t2",
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond,
	}
	a := startManager(t, cfg)
	b := startManager(t, cfg)
	eventually(t, 10*time.Second, "a leader", func() error {
		if elected(a) || elected(b) {
			return nil
		}
		return fmt.Errorf("nobody elected")
	})
	leader, follower := a, b
	if elected(b) {
		leader, follower = b, a
	}
	if elected(follower) {
		t.Fatal("both managers are leaders")
	}

	createVMI(t, "t2-vms", "vm1", "t2.app", map[string]string{nbv1.AnnotationIPs: "10.201.0.10"}, kubevirt.Status{NodeName: "n"})
	eventually(t, 5*time.Second, "endpoint by the leader", wantSpec("t2-vms", "vm1-default", func(*nbv1.BridgeEndpoint) error { return nil }))
	time.Sleep(500 * time.Millisecond)
	if n := follower.writes.n.Load(); n != 0 {
		t.Fatalf("the follower wrote %d times: %v", n, follower.writes.recent())
	}
	if leader.writes.n.Load() == 0 {
		t.Fatal("the leader wrote nothing")
	}

	start := time.Now()
	leader.stop()
	eventually(t, 10*time.Second, "follower takes over", func() error {
		if !elected(follower) {
			return fmt.Errorf("not elected")
		}
		return nil
	})
	t.Logf("takeover after %s", time.Since(start))

	createVMI(t, "t2-vms", "vm2", "t2.app", map[string]string{nbv1.AnnotationIPs: "10.201.0.11"}, kubevirt.Status{NodeName: "n"})
	annotateVMI(t, "t2-vms", "vm1", nbv1.AnnotationCutover, nbv1.CutoverActive)
	eventually(t, 5*time.Second, "new leader converges", func() error {
		if _, err := getEndpoint("t2-vms", "vm2-default"); err != nil {
			return err
		}
		ep, err := getEndpoint("t2-vms", "vm1-default")
		if err != nil {
			return err
		}
		if ep.Spec.State != nbv1.StateActive {
			return fmt.Errorf("vm1 state %s", ep.Spec.State)
		}
		return nil
	})
	if n := follower.writes.n.Load(); n == 0 || !strings.Contains(strings.Join(follower.writes.recent(), " "), "bridgeendpoints") {
		t.Fatalf("the new leader's writes were not seen: %v", follower.writes.recent())
	}
}
