package vlan

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// benchSegment is a gateway segment (VXLAN side only) with n endpoints
// spread over 16 nodes, each with one IPv4 address.
func benchSegment(n int) Segment {
	s := Segment{Name: "bench", VNI: 4000, Role: RoleGateway, MTU: 1450, LocalVTEP: netip.MustParseAddr("192.0.2.1"), HostRoutes: true}
	for i := 0; i < 16; i++ {
		s.FloodVTEPs = append(s.FloodVTEPs, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
	}
	for i := 0; i < n; i++ {
		s.Endpoints = append(s.Endpoints, Endpoint{
			MAC:  net.HardwareAddr{2, 0xbe, 0, 0, byte(i >> 8), byte(i)},
			IPs:  []netip.Addr{netip.AddrFrom4([4]byte{10, 30, byte(i >> 8), byte(i)})},
			VTEP: s.FloodVTEPs[i%16],
		})
	}
	return s
}

func benchDataPlane(b *testing.B) *DataPlane {
	ns := netnstest.New(b, "nb-bench")
	// The VTEP on loopback: its MTU (65536) carries any segment.
	ns.Run(b, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
	return New(ns.Handle, zap.NewNop())
}

// BenchmarkPlanConverged: the pure diff of a converged 1,000-endpoint
// segment (what every periodic resync pays besides observing).
func BenchmarkPlanConverged(b *testing.B) {
	s := benchSegment(1000)
	snap := host(map[uint32]*observed{s.VNI: converged(s)})
	snap.addrMTU[s.LocalVTEP] = 65536
	b.ReportAllocs()
	for b.Loop() {
		acts, refused := plan([]Segment{s}, snap)
		if len(acts) != 0 || refused[s.VNI] != nil {
			b.Fatalf("converged plan: %d actions, %v", len(acts), refused[s.VNI])
		}
	}
}

// BenchmarkReconcileNoop: observe + plan + nothing to apply, against a
// real kernel holding 1,000 endpoints (4,000 entries: remote MAC, port MAC,
// neighbour, route).
func BenchmarkReconcileNoop(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			d := benchDataPlane(b)
			s := benchSegment(n)
			if _, err := d.Reconcile(context.Background(), []Segment{s}); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				res, err := d.Reconcile(context.Background(), []Segment{s})
				if err != nil || res.Changes != 0 {
					b.Fatalf("no-op reconcile: %d changes, %v", res.Changes, err)
				}
			}
		})
	}
}

// BenchmarkReconcileProgram: a whole segment with n endpoints from
// nothing (a gateway taking over), then removal (not timed).
func BenchmarkReconcileProgram(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			d := benchDataPlane(b)
			s := benchSegment(n)
			var changes int
			var programmed time.Duration
			for b.Loop() {
				start := time.Now()
				res, err := d.Reconcile(context.Background(), []Segment{s})
				programmed += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				changes = res.Changes
				b.StopTimer()
				if _, err := d.Reconcile(context.Background(), nil); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(changes), "changes/op")
			b.ReportMetric(float64(n)*float64(b.N)/programmed.Seconds(), "endpoints/s")
		})
	}
}

// accessUplinks creates n interfaces named "upN" in ns to serve as access
// uplinks (both ends of n/2 veth pairs, via one `ip -batch`): setup, not
// timed.
func accessUplinks(b *testing.B, ns *netnstest.NS, n int) []string {
	b.Helper()
	var batch strings.Builder
	names := make([]string, 0, n)
	for i := 0; i < n; i += 2 {
		fmt.Fprintf(&batch, "link add up%d type veth peer name up%d\n", i, i+1)
		names = append(names, fmt.Sprintf("up%d", i), fmt.Sprintf("up%d", i+1))
	}
	f := filepath.Join(b.TempDir(), "uplinks.batch")
	if err := os.WriteFile(f, []byte(batch.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", ns.Name, "-batch", f).CombinedOutput(); err != nil {
		b.Fatalf("create %d uplinks: %v: %s", n, err, out)
	}
	return names[:n]
}

func accessSegments(uplinks []string) []Segment {
	segs := make([]Segment, len(uplinks))
	for i, up := range uplinks {
		segs[i] = Segment{Name: "s" + strconv.Itoa(i), VNI: uint32(10000 + i), Role: RoleGateway,
			Uplink: up, Access: true, MTU: 1450, LocalVTEP: netip.MustParseAddr("192.0.2.1"),
			FloodVTEPs: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}
	}
	return segs
}

func reportOps(b *testing.B, res Result) {
	b.ReportMetric(float64(res.Writes), "netlink-writes/op")
	b.ReportMetric(float64(res.Reads), "netlink-reads/op")
	b.ReportMetric(float64(res.Changes), "changes/op")
}

// accessHost is a namespace with the VTEP address and n access uplinks.
func accessHost(b *testing.B, n int) (*DataPlane, []Segment) {
	b.Helper()
	ns := netnstest.New(b, "nb-bacc")
	ns.Run(b, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
	return New(ns.Handle, zap.NewNop()), accessSegments(accessUplinks(b, ns, n))
}

// BenchmarkAccessSegments1000: 1,000 access-mode segments (bridge, VXLAN
// device, enslaved uplink, one flood entry each) applied to a host that
// has none, then re-applied to the converged host (target: 0 writes).
// Creating the 1,000 uplinks is setup, not timed. Each "apply" round gets
// a fresh namespace rather than removing the segments: deleting links one
// by one costs ~40 ms each on these machines (78 s for 1,000 segments),
// while a namespace's devices go in one batch when it is deleted.
func BenchmarkAccessSegments1000(b *testing.B) {
	ctx := context.Background()
	b.Run("apply", func(b *testing.B) {
		var res Result
		for b.Loop() {
			b.StopTimer()
			d, segs := accessHost(b, 1000)
			b.StartTimer()
			var err error
			if res, err = d.Reconcile(ctx, segs); err != nil {
				b.Fatal(err)
			}
		}
		reportOps(b, res)
	})
	b.Run("reapply", func(b *testing.B) {
		d, segs := accessHost(b, 1000)
		if _, err := d.Reconcile(ctx, segs); err != nil {
			b.Fatal(err)
		}
		var res Result
		for b.Loop() {
			var err error
			if res, err = d.Reconcile(ctx, segs); err != nil {
				b.Fatal(err)
			}
			if res.Writes != 0 {
				b.Fatalf("re-apply of a converged host wrote %d times", res.Writes)
			}
		}
		reportOps(b, res)
	})
}

// BenchmarkEndpointEntries10000: one segment with 10,000 remote endpoints
// (20,000 FDB entries: VTEP and static bridge entry per MAC, plus 10,000
// neighbour entries; no host routes) added to an empty segment, then
// re-applied to the converged host.
func BenchmarkEndpointEntries10000(b *testing.B) {
	d := benchDataPlane(b)
	ctx := context.Background()
	empty := benchSegment(0)
	empty.HostRoutes = false
	full := benchSegment(10000)
	full.HostRoutes = false

	b.Run("add", func(b *testing.B) {
		var res Result
		for b.Loop() {
			b.StopTimer()
			if _, err := d.Reconcile(ctx, []Segment{empty}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			var err error
			if res, err = d.Reconcile(ctx, []Segment{full}); err != nil {
				b.Fatal(err)
			}
		}
		reportOps(b, res)
	})
	b.Run("reapply", func(b *testing.B) {
		if _, err := d.Reconcile(ctx, []Segment{full}); err != nil {
			b.Fatal(err)
		}
		var res Result
		for b.Loop() {
			var err error
			if res, err = d.Reconcile(ctx, []Segment{full}); err != nil {
				b.Fatal(err)
			}
			if res.Writes != 0 {
				b.Fatalf("re-apply of a converged host wrote %d times", res.Writes)
			}
		}
		reportOps(b, res)
	})
}
