package trunk

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/qemuguest"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

// The HA run's guest budget (boot, both gateways' Lease and peer start-up
// through the user network, two failovers and a restart).
const (
	haGuestBudget = 4 * time.Minute
	wantHAChecks  = 39
)

// TestTrunkHA: two gateways in Kubernetes mode (Leases, peer channel,
// kernel fence) on one tagged trunk in the guest, the API server on the
// host reached over QEMU's user network (the guest's 10.0.2.2 is the
// host's loopback; a forwarder in each gateway namespace carries it).
// Failover by kill -9 and by node loss, judged by numbered broadcasts both
// ways (seen at most once, outage ≤ 1 s), and the duplicate-address gate
// from the holder and from the standby of a tagged VLAN.
func TestTrunkHA(t *testing.T) {
	start := time.Now()
	root := qemuguest.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	kdir := qemuguest.Kernel(ctx, t, root)
	tmp := t.TempDir()
	initBin, gwBin := filepath.Join(tmp, "init"), filepath.Join(tmp, "netbridge-gateway")
	qemuguest.BuildStatic(ctx, t, root, "./e2e/trunk/guest", initBin)
	qemuguest.BuildStatic(ctx, t, root, "./cmd/netbridge-gateway", gwBin)
	built := time.Since(start)

	kube := testenv.Start(t, testenv.Options{})
	files := haObjects(ctx, t, kube, tmp)
	files["bin/netbridge-gateway"] = gwBin
	t.Logf("trunk_ha_apiserver_s=%.1f", (time.Since(start) - built).Seconds())
	res, err := qemuguest.Boot(ctx, kdir, tmp, qemuguest.Guest{Init: initBin, Files: files, QEMUArgs: qemuguest.UserNet(), MemoryMB: 768,
		// Two gateways, their fences refreshed every heartbeat, and the
		// streams: one TCG CPU starved the agents (fenceLapsed).
		CPUs: 2})
	report(t, "trunk_ha", start, built, res, err, wantHAChecks, haGuestBudget)
}

// haObjects creates the cluster objects of the HA run and writes the
// guest's files: the kubeconfig (server: the forwarder in each gateway
// namespace), the peer key and where the API server is from the guest.
func haObjects(ctx context.Context, t *testing.T, kube *testenv.Env, dir string) map[string]string {
	t.Helper()
	c := kube.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "netbridge-system"}}))
	for name, vtep := range map[string]string{"gw1": "192.0.2.1", "gw2": "192.0.2.3"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{nbv1.LabelGateway: "true", "kubernetes.io/hostname": name}}}
		must(c.Create(ctx, n))
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: vtep}, {Type: corev1.NodeHostName, Address: name}}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		must(c.Status().Update(ctx, n))
	}
	must(c.Create(ctx, &nbv1.BridgeConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "trunk"},
		Spec: nbv1.BridgeConfigSpec{
			GatewaySelector: metav1.LabelSelector{MatchLabels: map[string]string{nbv1.LabelGateway: "true"}},
			Uplink:          nbv1.UplinkSpec{Interface: "eth1"},
			Segments: []nbv1.Segment{
				{Name: "a", VLANID: 100, VNI: 1100, Subnets: []string{"10.0.100.0/24"}, MTU: 1450},
				{Name: "b", VLANID: 200, VNI: 1200, Subnets: []string{"10.0.200.0/24"}, MTU: 1450},
			},
		},
	}))
	// The endpoints the controller would derive from VMIs (the guest's
	// vmA, vmB and vmdup, whose address hB holds), on the guest's node VTEP.
	for _, e := range []struct{ name, seg, ip, mac string }{
		{"vma", "a", "10.0.100.50", "02:00:00:01:00:50"},
		{"vmb", "b", "10.0.200.50", "02:00:00:02:00:50"},
		{"vmdup", "b", "10.0.200.77", "02:00:00:02:00:77"},
	} {
		must(c.Create(ctx, &nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Name: e.name, Namespace: "default"},
			Spec: nbv1.BridgeEndpointSpec{BridgeConfig: "trunk", Segment: e.seg, VMI: e.name, IPs: []string{e.ip}, MAC: e.mac,
				NodeName: "node1", VTEP: "192.0.2.2", State: nbv1.StateActive}}))
	}
	u, err := url.Parse(kube.Config.Host)
	must(err)
	cfg := rest.CopyConfig(kube.Config)
	cfg.Host = "https://127.0.0.1:6443" // the guest's forwarder
	files := map[string]string{
		"etc/ha/kubeconfig": filepath.Join(dir, "kubeconfig"),
		"etc/ha/peer.key":   filepath.Join(dir, "peer.key"),
		"etc/ha/api":        filepath.Join(dir, "api"),
	}
	must(testenv.WriteKubeconfig(cfg, files["etc/ha/kubeconfig"]))
	key := make([]byte, 32)
	_, err = rand.Read(key)
	must(err)
	must(os.WriteFile(files["etc/ha/peer.key"], key, 0o600))
	must(os.WriteFile(files["etc/ha/api"], []byte(fmt.Sprintf("%s:%s\n", qemuguest.HostIP, u.Port())), 0o600))
	return files
}
