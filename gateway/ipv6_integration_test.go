package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/labnet"
	"github.com/netbridge-io/netbridge/runbook"
)

// TestIPv6Parity: a dual-stack VM whose IPv6 address a legacy host still
// holds. The RFC 4862 probe on the VLAN side blocks the /128
// (DuplicateAddress with the legacy MAC, in the BridgeGateway status and
// in `netbridgectl status`) while the /32 goes out; once the legacy host
// lets the address go, the /128 reaches FRR's RIB and dc's kernel FIB and
// the VM answers over IPv6; after kill -9 of the active gateway, the new
// one sends unsolicited NAs for it (Override, ff02::1, the VM's MAC) on
// the announcement schedule, and the legacy host reaches the VM again.
func TestIPv6Parity(t *testing.T) {
	v := labnet.VMs[0]
	vm6 := labnet.VMIP6(v)
	k := newKubeLabWith(t, func(lab *labnet.Lab, bc *nbv1.BridgeConfig) {
		if err := lab.EnableIPv6(); err != nil {
			t.Fatal(err)
		}
		// The source VM is still up: host1 holds the VM's IPv6 address.
		if _, err := lab.Exec("host1", "ip", "-6", "addr", "add", vm6+"/64", "dev", "eth0", "nodad"); err != nil {
			t.Fatal(err)
		}
		bc.Spec.Segments[0].Subnets = append(bc.Spec.Segments[0].Subnets, labnet.Subnet6)
		bc.Spec.BGP.Peers = append(bc.Spec.BGP.Peers, nbv1.BGPPeer{Address: labnet.DCFabricIP6, ASN: labnet.DCASN,
			HoldTime: ptr(int32(3)), Keepalive: ptr(int32(1)), GracefulRestart: &nbv1.GracefulRestart{Enabled: true, RestartTime: 30}})
	}, "--lease-duration=3s", "--renew-deadline=1500ms", "--retry-period=200ms")
	lab := k.lab
	writeEndpoint(t, k.c, "vm1-default", []string{v.IP, vm6}, v.MAC)

	var active string
	eventually(t, 30*time.Second, "one gateway holds the lease and attaches", func() error {
		if active = k.holder(t); active == "" || !attached(lab, active) {
			return fmt.Errorf("holder %q not attached yet", active)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the /32 (IPv4 cleared) at dc", routeVia(lab, v.IP+"/32", fabricIP(active)))

	t.Run("duplicate blocks the /128", func(t *testing.T) {
		eventually(t, 15*time.Second, "DuplicateAddress for the IPv6 address with host1's MAC", func() error {
			for _, r := range k.gatewayStatus(t, active).Refused {
				if r.IP == vm6 && r.Reason == string(nbv1.ReasonDuplicateAddress) && r.MAC == labnet.LegacyHostMAC {
					return nil
				}
			}
			return fmt.Errorf("refused: %+v", k.gatewayStatus(t, active).Refused)
		})
		var out, errb bytes.Buffer
		cmd := runbook.NewCommand(&out, &errb)
		cmd.SetArgs([]string{"--kubeconfig", k.env.Kubeconfig, "status"})
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("netbridgectl status: %v\n%s%s", err, out.String(), errb.String())
		}
		t.Logf("netbridgectl status:\n%s", out.String())
		if want := "refused: DuplicateAddress, answered by " + labnet.LegacyHostMAC; !strings.Contains(out.String(), vm6) || !strings.Contains(out.String(), want) {
			t.Errorf("netbridgectl status does not name %s with %q", vm6, want)
		}
		if ok, nh := lab.HasRoute6(vm6 + "/128"); ok {
			t.Fatalf("%s/128 in dc's FIB via %s although host1 answers for it", vm6, nh)
		}
		if rib := frrRoute6(t, lab, vm6+"/128"); rib != "" {
			t.Fatalf("%s/128 in FRR's RIB although host1 answers for it: %s", vm6, rib)
		}
	})

	t.Run("advertised after the legacy host leaves", func(t *testing.T) {
		if _, err := lab.Exec("host1", "ip", "-6", "addr", "del", vm6+"/64", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		took := eventually(t, 15*time.Second, "/128 in dc's kernel FIB via the active gateway", func() error {
			if ok, nh := lab.HasRoute6(vm6 + "/128"); !ok || nh != labnet.FabricIP6(labnet.Host{FabricIP: fabricIP(active)}) {
				return fmt.Errorf("%s/128 in dc's FIB: %v via %q", vm6, ok, nh)
			}
			return nil
		})
		t.Logf("ipv6_advertised_after_ms=%d (duplicate backoff max 1s, probe ~0.3s)", took.Milliseconds())
		// Goal: the next re-probe (backoff max 1 s + a 0.3 s probe) plus
		// BGP to the FIB, ~1.5 s; asserted at 2x.
		if took > 3*time.Second {
			t.Errorf("the /128 reached dc's FIB %d ms after the legacy host left, want <= 3000", took.Milliseconds())
		}
		if rib := frrRoute6(t, lab, vm6+"/128"); rib == "" {
			t.Fatalf("%s/128 not in FRR's RIB", vm6)
		}
		if err := ping(lab, "client", vm6); err != nil {
			t.Fatalf("client cannot reach the VM over IPv6 through the /128: %v", err)
		}
		if err := ping(lab, "host1", vm6); err != nil {
			t.Fatalf("host1 cannot reach the VM over IPv6 (L2): %v", err)
		}
		for _, r := range k.gatewayStatus(t, active).Refused {
			if r.IP == vm6 {
				t.Errorf("still refused after advertising: %+v", r)
			}
		}
	})

	t.Run("takeover announces the IPv6 address", func(t *testing.T) {
		next := other(active)
		nas := captureNAs(t, lab, "host1", vm6)
		t0 := time.Now()
		k.gws[active].signal(syscall.SIGKILL)
		attachedAt := eventually(t, 15*time.Second, "the standby attaches", func() error {
			if !attached(lab, next) {
				return fmt.Errorf("%s not attached", next)
			}
			return nil
		})
		time.Sleep(6 * time.Second) // the whole announcement schedule (0 … 5 s)
		seen := nas.stop()
		if len(seen) == 0 {
			t.Fatalf("no unsolicited NA for %s reached host1 after the takeover", vm6)
		}
		for _, na := range seen {
			if na.srcMAC != v.MAC || na.dst != "ff02::1" || !na.override || na.solicited || na.tlla != v.MAC || na.hopLimit != 255 {
				t.Errorf("NA %+v: want from %s to ff02::1, Override, not Solicited, target link-layer %s, hop limit 255", na, v.MAC, v.MAC)
			}
		}
		first := seen[0].at.Sub(t0)
		t.Logf("na_refresh_ms=%d (kill -9 → first NA at host1; standby attached after %d ms, lease 3s) nas=%d",
			first.Milliseconds(), attachedAt.Milliseconds(), len(seen))
		// The first NA leaves in the pass that attaches: within 2x a 500 ms budget of the attach.
		if after := first - attachedAt; after > time.Second {
			t.Errorf("first NA %d ms after the attach, want <= 1000", after.Milliseconds())
		}
		if len(seen) < 6 {
			t.Errorf("%d NAs reached host1, want the schedule's 6", len(seen))
		}
		// kill -9 leaves FRR the crashed gateway's path (graceful
		// restart, stale) whose kernel still forwards: the /128 must stay,
		// through either gateway.
		if ok, nh := lab.HasRoute6(vm6 + "/128"); !ok || (nh != labnet.FabricIP6(labnet.Host{FabricIP: fabricIP(next)}) && nh != labnet.FabricIP6(labnet.Host{FabricIP: fabricIP(active)})) {
			t.Fatalf("%s/128 after the takeover: %v via %q", vm6, ok, nh)
		}
		if err := ping(lab, "host1", vm6); err != nil {
			t.Fatalf("host1 cannot reach the VM over IPv6 after the takeover: %v", err)
		}
		if err := ping(lab, "client", vm6); err != nil {
			t.Fatalf("client cannot reach the VM over IPv6 after the takeover: %v", err)
		}
	})
}

func writeEndpoint(t *testing.T, c client.Client, name string, ips []string, mac string) {
	t.Helper()
	be := &nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default",
		Labels: map[string]string{nbv1.LabelBridgeConfig: "lab", nbv1.LabelSegmentName: "app"}},
		Spec: nbv1.BridgeEndpointSpec{BridgeConfig: "lab", Segment: "app", VMI: strings.TrimSuffix(name, "-default"),
			IPs: ips, MAC: mac, NodeName: "node1", VTEP: labnet.Nodes[0].FabricIP, State: nbv1.StateActive}}
	if err := c.Create(context.Background(), be); err != nil {
		t.Fatalf("create endpoint %s: %v", name, err)
	}
}

// frrRoute6 is FRR's RIB entry for an IPv6 prefix ("" when absent).
func frrRoute6(t *testing.T, lab *labnet.Lab, prefix string) string {
	t.Helper()
	out, err := lab.Vtysh("show bgp ipv6 unicast " + prefix + " json")
	if err != nil {
		t.Fatalf("vtysh: %v: %s", err, out)
	}
	var r struct {
		Paths []json.RawMessage `json:"paths"`
	}
	if json.Unmarshal(out, &r) != nil || len(r.Paths) == 0 {
		return ""
	}
	return string(out)
}

type seenNA struct {
	at                  time.Time
	srcMAC, dst, tlla   string
	override, solicited bool
	hopLimit            uint8
}

type naCapture struct {
	conn *packet.Conn
	done chan struct{}
	mu   sync.Mutex
	seen []seenNA
}

func (c *naCapture) stop() []seenNA {
	c.conn.Close()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}

// captureNAs records the Neighbor Advertisements for target arriving on
// eth0 in a lab namespace, decoded by gopacket (not by our encoder).
func captureNAs(t *testing.T, lab *labnet.Lab, role, target string) *naCapture {
	t.Helper()
	c := &naCapture{done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// This thread stays in the lab namespace and dies with the goroutine.
		runtime.LockOSThread()
		h, err := netns.GetFromName(lab.NS(role))
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		var ifi *net.Interface
		if err == nil {
			ifi, err = net.InterfaceByName("eth0")
		}
		if err == nil {
			c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, nil)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("capture in %s: %v", role, err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 2000)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			pkt := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
			na, ok := pkt.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
			if !ok || na.TargetAddress.String() != target {
				continue
			}
			s := seenNA{at: time.Now(), srcMAC: pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet).SrcMAC.String(),
				override: na.Override(), solicited: na.Solicited()}
			ip6 := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			s.dst, s.hopLimit = ip6.DstIP.String(), ip6.HopLimit
			for _, o := range na.Options {
				if o.Type == layers.ICMPv6OptTargetAddress && len(o.Data) == 6 {
					s.tlla = net.HardwareAddr(o.Data).String()
				}
			}
			c.mu.Lock()
			c.seen = append(c.seen, s)
			c.mu.Unlock()
		}
	}()
	return c
}
