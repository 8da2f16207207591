package controller_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	cni100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
	"github.com/netbridge-io/netbridge/internal/cniattach"
	"github.com/netbridge-io/netbridge/internal/netnstest"
	"github.com/netbridge-io/netbridge/internal/testenv"
	"github.com/netbridge-io/netbridge/vlan"
)

// cniBinDir builds (once, cached) the pinned reference CNI plugins with
// hack/cni.sh and returns their folder. A failed build fails the test.
func cniBinDir(t *testing.T) string {
	t.Helper()
	dir, err := cniattach.BuildPlugins(context.Background(), testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBridgeCNIAttachesVMThroughNAD runs the real bridge CNI plugin with
// the NetworkAttachmentDefinition our controller wrote, the way Multus
// runs it for a KubeVirt VM (libcni, CNI_COMMAND=ADD, a fresh network
// namespace as the pod, the preserved MAC as runtimeConfig.mac), on a node
// whose segment bridge the real vlan package built. A legacy host behind
// an access port of a gateway (also the real vlan package) then reaches
// the "VM" over VXLAN; DEL removes the attachment and nothing else.
func TestBridgeCNIAttachesVMThroughNAD(t *testing.T) {
	const (
		vni   = 16116
		mtu   = 1450
		vmMAC = "02:16:00:00:00:50"
	)
	var (
		gwVTEP   = netip.MustParseAddr("192.0.2.1")
		nodeVTEP = netip.MustParseAddr("192.0.2.2")
	)
	ctx := context.Background()
	binDir := cniBinDir(t)

	// The controller writes the NAD.
	createNamespace(t, "t16c-vms", nil)
	bc := bridgeConfig("t16c", map[string]string{"netbridge.io/gateway": "t16c"},
		nbv1.Segment{Name: "app", VLANID: 1611, VNI: vni, MTU: mtu, Subnets: []string{"10.20.0.0/24"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "t16c-vms"}}})
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)
	startManager(t, controller.Config{NetworkAttachments: true})
	var confJSON string
	eventually(t, 10*time.Second, "NAD t16c-vms/t16c.app", func() error {
		_, u, err := nadConf("t16c-vms", "t16c.app")
		if err != nil {
			return err
		}
		confJSON, _, _ = unstructured.NestedString(u.Object, "spec", "config")
		return nil
	})
	t.Logf("NAD config: %s", confJSON)

	// legacy --(access port up0)-- gw ==VXLAN over ul0== node --(CNI veth)-- vm
	legacy := netnstest.New(t, "t16-leg")
	gw := netnstest.New(t, "t16-gw")
	node := netnstest.New(t, "t16-node")
	vm := netnstest.New(t, "t16-vm")
	netnstest.Veth(t, legacy, "eth0", gw, "up0")
	netnstest.Veth(t, gw, "ul0", node, "ul0")
	gw.Run(t, "ip", "addr", "add", gwVTEP.String()+"/24", "dev", "ul0")
	node.Run(t, "ip", "addr", "add", nodeVTEP.String()+"/24", "dev", "ul0")
	legacy.Run(t, "ip", "addr", "add", "10.20.0.1/24", "dev", "eth0")

	mac, _ := net.ParseMAC(vmMAC)
	ep := vlan.Endpoint{MAC: mac, IPs: []netip.Addr{netip.MustParseAddr("10.20.0.50")}, VTEP: nodeVTEP}
	nodeDP := vlan.New(node.Handle, zaptest.NewLogger(t).Named("node"))
	if r, err := nodeDP.Reconcile(ctx, []vlan.Segment{{Name: "t16c.app", VNI: vni, Role: vlan.RoleNode, MTU: mtu,
		LocalVTEP: nodeVTEP, FloodVTEPs: []netip.Addr{gwVTEP}, Endpoints: []vlan.Endpoint{ep}}}); err != nil || r.Segments[vni] != nil {
		t.Fatalf("node data plane: %v, segment: %v", err, r.Segments[vni])
	}
	gwDP := vlan.New(gw.Handle, zaptest.NewLogger(t).Named("gw"))
	if r, err := gwDP.Reconcile(ctx, []vlan.Segment{{Name: "t16c.app", VNI: vni, Role: vlan.RoleGateway, Uplink: "up0", Access: true, MTU: mtu,
		LocalVTEP: gwVTEP, FloodVTEPs: []netip.Addr{nodeVTEP}, Endpoints: []vlan.Endpoint{ep}}}); err != nil || r.Segments[vni] != nil {
		t.Fatalf("gateway data plane: %v, segment: %v", err, r.Segments[vni])
	}

	// Multus: libcni with the NAD's config as it stands, the pod's netns,
	// the K8S_* args, the network selection's "mac" as capability arg.
	plugin := cniattach.Plugin{BinDir: binDir, CacheDir: t.TempDir(), NodeNetNS: node.Name}
	att, res, err := plugin.Add(ctx, confJSON, cniattach.Pod{
		Namespace: "t16c-vms", Name: "virt-launcher-vm1-abcde", UID: "0e4f6a2c", ContainerID: "t16c-virt-launcher-vm1",
		NetNS: "/run/netns/" + vm.Name, IfName: "net1", MAC: vmMAC,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CNI ADD result: %+v", res.Interfaces)
	delDone := false
	t.Cleanup(func() {
		if !delDone {
			_ = att.Del(ctx)
		}
	})

	// The pod side has the preserved MAC and the segment MTU; the node
	// side is a port of the segment bridge.
	vmLink, err := vm.Handle.LinkByName("net1")
	if err != nil {
		t.Fatalf("net1 in the VM namespace: %v", err)
	}
	if got := vmLink.Attrs().HardwareAddr.String(); got != vmMAC {
		t.Errorf("VM interface MAC %s, want the preserved %s", got, vmMAC)
	}
	if got := vmLink.Attrs().MTU; got != mtu {
		t.Errorf("VM interface MTU %d, want the segment's %d", got, mtu)
	}
	hostPort := hostVethOn(t, node, res)
	if master := portMaster(t, node.Handle, hostPort); master != nbv1.SegmentBridgeName(vni) {
		t.Fatalf("host veth %s master %q, want the segment bridge %s", hostPort, master, nbv1.SegmentBridgeName(vni))
	}

	// No IPAM: the guest keeps its static legacy address.
	vm.Run(t, "ip", "addr", "add", "10.20.0.50/24", "dev", "net1")
	start := time.Now()
	out, err := legacy.Exec(ctx, "ping", "-c3", "-i0.2", "-W2", "10.20.0.50")
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("legacy host -> VM through the gateway: %v\n%s\ngateway fdb:\n%s\nnode bridge:\n%s", err, out,
			gw.Run(t, "bridge", "fdb", "show", "dev", vlan.VXLANName(vni)), node.Run(t, "bridge", "link", "show"))
	}
	t.Logf("legacy_to_vm_ping_ms=%d (3 echoes)", time.Since(start).Milliseconds())
	// The VM's frames carry its preserved MAC: the legacy host learned it.
	if n := legacy.Run(t, "ip", "neigh", "show", "10.20.0.50"); !strings.Contains(n, vmMAC) {
		t.Errorf("legacy host's neighbour entry for the VM: %q, want MAC %s", n, vmMAC)
	}

	// The agent's next pass (a resync) adopts its bridge as the plugin left
	// it and leaves the VM's port alone.
	res2, err := nodeDP.Reconcile(ctx, []vlan.Segment{{Name: "t16c.app", VNI: vni, Role: vlan.RoleNode, MTU: mtu,
		LocalVTEP: nodeVTEP, FloodVTEPs: []netip.Addr{gwVTEP}, Endpoints: []vlan.Endpoint{ep}}})
	if err != nil || res2.Segments[vni] != nil {
		t.Fatalf("node resync after the CNI ADD: %v, segment: %v", err, res2.Segments[vni])
	}
	t.Logf("node resync after the CNI ADD: %d netlink changes", res2.Changes)
	if master := portMaster(t, node.Handle, hostPort); master != nbv1.SegmentBridgeName(vni) {
		t.Fatalf("after the agent's resync the VM port's master is %q", master)
	}
	if out, err := legacy.Exec(ctx, "ping", "-c1", "-W2", "10.20.0.50"); err != nil {
		t.Fatalf("legacy host -> VM after the agent's resync: %v\n%s", err, out)
	}

	// DEL, as Multus on pod deletion: the attachment goes, the node
	// agent's bridge and VXLAN device stay.
	if err := att.Del(ctx); err != nil {
		t.Fatal(err)
	}
	delDone = true
	if _, err := node.Handle.LinkByName(hostPort); err == nil {
		t.Errorf("host veth %s still exists after DEL", hostPort)
	}
	if _, err := vm.Handle.LinkByName("net1"); err == nil {
		t.Errorf("net1 still exists in the VM namespace after DEL")
	}
	ports := node.Run(t, "bridge", "link", "show")
	if strings.Count(ports, "master "+nbv1.SegmentBridgeName(vni)) != 1 || !strings.Contains(ports, vlan.VXLANName(vni)) {
		t.Errorf("after DEL the segment bridge should keep exactly its VXLAN port:\n%s", ports)
	}
	if out, err := legacy.Exec(ctx, "ping", "-c1", "-W1", "10.20.0.50"); err == nil {
		t.Errorf("VM still reachable after DEL:\n%s", out)
	}
}

// hostVethOn is the node-side interface named in the CNI result.
func hostVethOn(t *testing.T, node *netnstest.NS, res *cni100.Result) string {
	t.Helper()
	for _, i := range res.Interfaces {
		if i.Sandbox == "" && strings.HasPrefix(i.Name, "veth") {
			if _, err := node.Handle.LinkByName(i.Name); err != nil {
				t.Fatalf("host veth %s from the CNI result is not in the node namespace: %v", i.Name, err)
			}
			return i.Name
		}
	}
	t.Fatalf("no host veth in the CNI result %+v", res.Interfaces)
	return ""
}

func portMaster(t *testing.T, h *netlink.Handle, port string) string {
	t.Helper()
	l, err := h.LinkByName(port)
	if err != nil {
		t.Fatalf("link %s: %v", port, err)
	}
	if l.Attrs().MasterIndex == 0 {
		return ""
	}
	m, err := h.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		t.Fatal(fmt.Errorf("master of %s: %w", port, err))
	}
	return m.Attrs().Name
}
