package vlan

import (
	"context"
	"fmt"
	"net"
	"net/netip"
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
