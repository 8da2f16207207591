package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

// killOutageLength is how long the API server stays dead in
// TestAPIServerKillCatchup.
const killOutageLength = 10 * time.Second

// TestAPIServerKillCatchup (issue 19 rule 2): a change written right
// before the API server is SIGKILLed, which the controller may not have
// seen, is applied within the goal of the server's return. The
// manager lives through the outage (no leader election), so it is its
// informers that must catch up: three kills in a row, one process.
func TestAPIServerKillCatchup(t *testing.T) {
	e := testenv.Start(t, testenv.Options{ExtraCRDPaths: []string{testenv.KubeVirtCRDPath()}})
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := testenv.WaitCRDsEstablished(wctx, e.Client, testenv.KubeVirtVMICRDName, "bridgeendpoints.netbridge.io"); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controller.DefaultNamespace}}); err != nil {
		t.Fatal(err)
	}
	api, err := e.APIServer()
	if err != nil {
		t.Fatal(err)
	}
	bin := buildController(t)

	const vlan = 311
	o := &outage{t: t, env: e, api: api, kill: true}
	name := "k" + fmt.Sprint(vlan)
	ns := name + "-vms"
	subnet := fmt.Sprintf("10.%d.0", vlan-100)
	o.mustCreate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	o.mustCreate(bridgeConfig(name, map[string]string{"netbridge.io/gateway": name},
		nbv1.Segment{Name: "app", VLANID: vlan, VNI: 10000 + vlan, Subnets: []string{subnet + ".0/24"}}))
	seg := name + ".app"
	o.createVMI(ns, "keep", seg, subnet+".10")
	o.createVMI(ns, "move", seg, subnet+".12")
	p := startController(t, bin, e.Kubeconfig, "netbridge-controller-"+name, false)
	o.eventually(30*time.Second, "initial endpoints", func() error {
		return o.endpointsExactly(ns, map[string]string{"keep-default": subnet + ".10", "move-default": subnet + ".12"})
	})

	for round := 1; round <= 3; round++ {
		ip := fmt.Sprintf("%s.%d", subnet, 20+round)
		p.mu.Lock()
		from := len(p.lines)
		p.mu.Unlock()
		o.readdressVMI(ns, "move", ip)
		o.fault()
		time.Sleep(time.Until(o.gone.Add(killOutageLength)))
		p.checkSame(t)
		back := o.recover()
		want := map[string]string{"keep-default": subnet + ".10", "move-default": ip}
		o.eventually(catchupBound, "change written before the kill", func() error { return o.endpointsExactly(ns, want) })
		applied := time.Since(back)
		t.Logf("round=%d outage_ms=%d applied_after_return_ms=%d", round, o.length.Milliseconds(), applied.Milliseconds())
		// Asserted at the bound (2 × the goal, the noise allowance every
		// outage figure gets, as TestAPIServerOutage does); over the goal
		// is logged with the controller's lines so a slow round is explained.
		if applied > catchupGoal {
			p.mu.Lock()
			since := strings.Join(p.lines[from:], "\n")
			p.mu.Unlock()
			report := t.Logf
			if applied > catchupBound {
				report = t.Errorf
			}
			report("round %d: change written before the kill applied %s after the return (%s), goal %s, bound %s; controller log since the write:\n%s",
				round, applied, back.UTC().Format("15:04:05.000"), catchupGoal, catchupBound, since)
		}
		p.waitReady(t, true, 5*time.Second, time.Now())
	}
	p.checkSame(t)
}
