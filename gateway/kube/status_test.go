package kube

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"k8s.io/client-go/tools/record"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway"
)

// TestFailoverEventsByCause: losing the Active role is labelled by its
// cause, not by Degraded: a planned release while the gateway still
// reports an API outage of the last 5 minutes is LeaseReleased; a lapsed
// lease is Fenced, with or without an outage.
func TestFailoverEventsByCause(t *testing.T) {
	key := gateway.SegmentKey{BridgeConfig: "lab", Segment: "app"}
	outage := "API server was unreachable for 2m0s until 2026-12-02T05:00:00Z: forwarding kept the last applied state"
	report := func(role nbv1.SegmentRole, fenced, degraded bool) gateway.Report {
		r := gateway.Report{Segments: []gateway.SegmentReport{{Key: key, Role: string(role), Fenced: fenced}}}
		if degraded {
			r.Degraded, r.DegradedReason = true, outage
		}
		return r
	}
	for _, c := range []struct {
		name             string
		fenced, degraded bool
		want             string
	}{
		{"planned release after an outage", false, true, "Normal LeaseReleased"},
		{"planned release", false, false, "Normal LeaseReleased"},
		{"lease lapsed during an outage", true, true, "Warning Fenced"},
		{"lease lapsed, API reachable", true, false, "Warning Fenced"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := record.NewFakeRecorder(10)
			w := NewStatusWriter(nil, rec, "gw1", gateway.RoleGateway, zap.NewNop())
			w.events(report(nbv1.SegmentRoleActive, false, c.degraded))
			w.events(report(nbv1.SegmentRoleStandby, c.fenced, c.degraded))
			select {
			case ev := <-rec.Events:
				if !strings.HasPrefix(ev, c.want+" ") {
					t.Fatalf("event %q, want %s", ev, c.want)
				}
				if strings.Contains(ev, "()") {
					t.Errorf("event %q has an empty cause", ev)
				}
			default:
				t.Fatalf("no event, want %s", c.want)
			}
		})
	}
}
