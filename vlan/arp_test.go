package vlan

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

func TestPortOnTheStretch(t *testing.T) {
	s, seg, legacyMAC := newProbeStretch(t)
	legacyIP := netip.MustParseAddr("10.20.0.1")
	freeIP := netip.MustParseAddr("10.20.0.99")

	t.Run("probe on the VLAN side", func(t *testing.T) {
		// The VM keeps announcing itself meanwhile: its ARPs (sender = the
		// VM's IP) are flooded out of the VLAN side and must not count as
		// a duplicate of the VM's address.
		stop := make(chan struct{})
		vmDone := make(chan error, 1)
		go func() {
			vmDone <- s.vm.Do(func() error {
				p, err := OpenPort("eth0")
				if err != nil {
					return err
				}
				defer p.Close()
				for {
					if err := p.GratuitousARP(vmIP, s.vmMAC); err != nil {
						return err
					}
					select {
					case <-stop:
						return nil
					case <-time.After(50 * time.Millisecond):
					}
				}
			})
		}()
		defer func() {
			close(stop)
			if err := <-vmDone; err != nil {
				t.Errorf("VM announcements: %v", err)
			}
		}()
		found, _, err := probeFrom(s.gw, seg.VLANSide(), []netip.Addr{legacyIP, freeIP, vmIP}, ProbeOptions{})
		if err != nil {
			t.Fatalf("Probe: %v", err)
		}
		if got := found[legacyIP].String(); got != legacyMAC {
			t.Errorf("legacy host's address: found %q, want %s", got, legacyMAC)
		}
		if mac, ok := found[freeIP]; ok {
			t.Errorf("free address reported as held by %s", mac)
		}
		if mac, ok := found[vmIP]; ok {
			t.Errorf("the VM's address (VXLAN side) reported on the VLAN side, by %s", mac)
		}
	})

	t.Run("gratuitous ARP moves the legacy cache", func(t *testing.T) {
		s.legacy.Run(t, "sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0")
		s.legacy.Run(t, "ping", "-c1", "-W2", vmIP.String())
		newMAC := net.HardwareAddr{2, 0, 0, 0, 0, 0x51}
		err := s.gw.Do(func() error {
			p, err := OpenPort(seg.VLANSide())
			if err != nil {
				return err
			}
			defer p.Close()
			return p.GratuitousARP(vmIP, newMAC)
		})
		if err != nil {
			t.Fatalf("GratuitousARP: %v", err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			out := s.legacy.Run(t, "ip", "neigh", "show", vmIP.String())
			if strings.Contains(out, newMAC.String()) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("legacy cache not updated: %s", out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("RARP announcement teaches the node", func(t *testing.T) {
		moved := net.HardwareAddr{2, 0, 0, 0, 0, 0x99}
		err := s.gw.Do(func() error {
			p, err := OpenPort(VXLANName(testVNI))
			if err != nil {
				return err
			}
			defer p.Close()
			return p.AnnounceMAC(moved)
		})
		if err != nil {
			t.Fatalf("AnnounceMAC: %v", err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			out := s.node.Run(t, "bridge", "fdb", "show", "dev", VXLANName(testVNI))
			if strings.Contains(out, moved.String()+" dst 192.0.2.1") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node did not learn %s behind the gateway:\n%s", moved, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// newProbeStretch is the probe lab shared by the ARP and NDP tests: the
// stretch with the node's VM bridged and the gateway's segment attached;
// it returns the gateway's segment and the legacy host's MAC.
func newProbeStretch(t *testing.T) (*stretch, Segment, string) {
	t.Helper()
	s := newStretch(t)
	reconcile(t, s.nodeDP, s.nodeSegment())
	s.node.Run(t, "ip", "link", "set", "vm0", "master", BridgeName(testVNI))
	seg := s.gwSegment()
	reconcile(t, s.gwDP, seg)
	return s, seg, strings.TrimSpace(s.legacy.Run(t, "cat", "/sys/class/net/eth0/address"))
}

// probeFrom runs one Probe on port inside ns and says how long it took.
func probeFrom(ns *netnstest.NS, port string, ips []netip.Addr, o ProbeOptions) (map[netip.Addr]net.HardwareAddr, time.Duration, error) {
	var found map[netip.Addr]net.HardwareAddr
	var took time.Duration
	err := ns.Do(func() error {
		p, err := OpenPort(port)
		if err != nil {
			return err
		}
		defer p.Close()
		start := time.Now()
		found, err = p.Probe(context.Background(), ips, o)
		took = time.Since(start)
		return err
	})
	return found, took, err
}

func TestProbeRejectsMappedAddresses(t *testing.T) {
	p := &Port{ifi: &net.Interface{Name: "x"}}
	for _, ip := range []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1"), {}} {
		if _, err := p.Probe(context.Background(), []netip.Addr{ip}, ProbeOptions{}); err == nil {
			t.Errorf("Probe(%v): want an error", ip)
		}
	}
}

// TestProbeReportsFreeWithinBound: a free address is reported free no later
// than ProbeBound (plus scheduling slack), and a held one as soon as its
// holder answers.
func TestProbeReportsFreeWithinBound(t *testing.T) {
	a := netnstest.New(t, "nb-pra")
	b := netnstest.New(t, "nb-prb")
	netnstest.Veth(t, a, "eth0", b, "eth0")
	b.Run(t, "ip", "addr", "add", "10.40.0.2/24", "dev", "eth0")
	held, free := netip.MustParseAddr("10.40.0.2"), netip.MustParseAddr("10.40.0.99")
	opts := ProbeOptions{Probes: 3, Interval: 50 * time.Millisecond, Wait: 200 * time.Millisecond}
	bound := ProbeBound(opts)
	if bound != 300*time.Millisecond {
		t.Fatalf("ProbeBound = %v, want 300ms", bound)
	}
	if d := ProbeBound(ProbeOptions{}); d != 700*time.Millisecond {
		t.Errorf("ProbeBound(defaults) = %v, want 700ms", d)
	}
	probe := func(ips ...netip.Addr) (map[netip.Addr]net.HardwareAddr, time.Duration) {
		t.Helper()
		var found map[netip.Addr]net.HardwareAddr
		var took time.Duration
		err := a.Do(func() error {
			p, err := OpenPort("eth0")
			if err != nil {
				return err
			}
			defer p.Close()
			start := time.Now()
			found, err = p.Probe(context.Background(), ips, opts)
			took = time.Since(start)
			return err
		})
		if err != nil {
			t.Fatalf("Probe: %v", err)
		}
		return found, took
	}

	found, took := probe(free)
	t.Logf("free address reported in %v (bound %v)", took.Round(time.Millisecond), bound)
	if len(found) != 0 {
		t.Errorf("free address reported held: %v", found)
	}
	// The 100 ms read slice is the only slack beyond the bound.
	if took < bound-20*time.Millisecond || took > bound+150*time.Millisecond {
		t.Errorf("free address reported after %v, want about %v", took, bound)
	}

	found, took = probe(held)
	t.Logf("held address reported in %v", took.Round(time.Millisecond))
	if _, ok := found[held]; !ok {
		t.Errorf("held address not found: %v", found)
	}
	if took >= bound {
		t.Errorf("held address took %v: Probe should return once every address is claimed", took)
	}
}
