package controller

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

func TestHoldPendingCreates(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ep := func(name string) *nbv1.BridgeEndpoint {
		return &nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
	}
	names := func(eps []*nbv1.BridgeEndpoint) []string {
		var out []string
		for _, e := range eps {
			out = append(out, e.Name)
		}
		return out
	}
	live, expired := now.Add(time.Second), now.Add(-time.Second)
	for _, tc := range []struct {
		name     string
		create   []string
		existing []string
		pending  map[string]time.Time
		keep     []string
		held     int
		left     []string
	}{
		{name: "nothing pending: every create goes", create: []string{"a", "b"}, keep: []string{"a", "b"}},
		{name: "created, cache behind: held", create: []string{"a", "b"}, pending: map[string]time.Time{"ns/a": live},
			keep: []string{"b"}, held: 1, left: []string{"ns/a"}},
		{name: "cache shows it: expectation ends", existing: []string{"a"}, pending: map[string]time.Time{"ns/a": live}},
		{name: "expired: created again", create: []string{"a"}, pending: map[string]time.Time{"ns/a": expired}, keep: []string{"a"}},
		{name: "other namespace is another name", create: []string{"a"}, pending: map[string]time.Time{"other/a": live},
			keep: []string{"a"}, left: []string{"other/a"}},
		{name: "pending but no longer desired: kept until seen", pending: map[string]time.Time{"ns/a": live}, left: []string{"ns/a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var create, existing []*nbv1.BridgeEndpoint
			for _, n := range tc.create {
				create = append(create, ep(n))
			}
			for _, n := range tc.existing {
				existing = append(existing, ep(n))
			}
			keep, held, left := holdPendingCreates(create, existing, tc.pending, now)
			if got := names(keep); !slices.Equal(got, tc.keep) {
				t.Errorf("keep = %v, want %v", got, tc.keep)
			}
			if held != tc.held {
				t.Errorf("held = %d, want %d", held, tc.held)
			}
			var gotLeft []string
			for n := range left {
				gotLeft = append(gotLeft, n)
			}
			slices.Sort(gotLeft)
			if !slices.Equal(gotLeft, tc.left) {
				t.Errorf("left = %v, want %v", gotLeft, tc.left)
			}
		})
	}
}

func TestCreateExpectationsHold(t *testing.T) {
	e := newCreateExpectations()
	key := SegmentKey{BridgeConfig: "bc", Segment: "s"}
	now := time.Now()
	e.expect(key, "ns/a", now)
	plan := SegmentPlan{Create: []*nbv1.BridgeEndpoint{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}}}
	if held := e.hold(key, &plan, nil, now); held != 1 || len(plan.Create) != 0 {
		t.Fatalf("held %d, %d creates left; want 1 held, 0 left", held, len(plan.Create))
	}
	seen := []*nbv1.BridgeEndpoint{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}}
	if held := e.hold(key, &SegmentPlan{}, seen, now); held != 0 {
		t.Fatalf("held %d after the cache showed it", held)
	}
	if len(e.pending) != 0 {
		t.Fatalf("expectations left after the cache caught up: %v", e.pending)
	}
}
