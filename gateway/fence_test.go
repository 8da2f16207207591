package gateway

import (
	"maps"
	"testing"
	"time"
)

// TestFenceLapses: a refresh that comes after the last element ran out
// names the port and how late it came; ports no longer kept alive, first
// writes and refreshes in time name nothing.
func TestFenceLapses(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	until := fenceDeadlines(map[string]time.Duration{"uplink0": ms(250), "uplink1": ms(250)}, t0)
	for _, tc := range []struct {
		name  string
		alive map[string]time.Duration
		now   time.Duration
		want  map[string]time.Duration
	}{
		{"refreshed in time", map[string]time.Duration{"uplink0": ms(250), "uplink1": ms(250)}, ms(100), map[string]time.Duration{}},
		{"refreshed at the expiry", map[string]time.Duration{"uplink0": ms(250)}, ms(250), map[string]time.Duration{}},
		{"agent starved 400 ms", map[string]time.Duration{"uplink0": ms(250), "uplink1": ms(250)}, ms(400),
			map[string]time.Duration{"uplink0": ms(150), "uplink1": ms(150)}},
		{"grant ended on purpose: not kept alive, not a lapse", map[string]time.Duration{"uplink1": ms(250)}, ms(300),
			map[string]time.Duration{"uplink1": ms(50)}},
		{"first write of a port", map[string]time.Duration{"uplink2": ms(250)}, ms(900), map[string]time.Duration{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fenceLapses(until, tc.alive, t0.Add(tc.now)); !maps.Equal(got, tc.want) {
				t.Fatalf("lapses %v, want %v", got, tc.want)
			}
		})
	}
}
