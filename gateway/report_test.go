package gateway

import (
	"strings"
	"testing"
	"time"
)

// TestAPIOutageReport: what the gateway reports about API server outages,
// pass by pass: the ongoing one, then the one that ended for
// apiOutageShown (nothing could be written during it), then nothing.
func TestAPIOutageReport(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type pass struct {
		at        time.Duration
		reachable bool
		want      string // substring of the message; "" = nothing to report
		ongoing   bool
	}
	for _, tc := range []struct {
		name   string
		passes []pass
	}{
		{"never down", []pass{{0, true, "", false}, {time.Hour, true, "", false}}},
		{"ongoing", []pass{{0, true, "", false}, {time.Second, false, "API server unreachable", true}, {time.Minute, false, "API server unreachable", true}}},
		{"ended: reported with its length and end", []pass{
			{0, false, "unreachable", true},
			{30 * time.Second, false, "unreachable", true},
			{2 * time.Minute, true, "was unreachable for 2m0s until 2026-12-02T01:02:00Z", false},
			{2*time.Minute + apiOutageShown - time.Second, true, "was unreachable for 2m0s", false},
			{2*time.Minute + apiOutageShown, true, "", false},
		}},
		{"a second outage replaces the first", []pass{
			{0, false, "unreachable", true},
			{time.Minute, true, "for 1m0s until 2026-12-02T01:01:00Z", false},
			{2 * time.Minute, false, "API server unreachable", true},
			{4 * time.Minute, true, "for 2m0s until 2026-12-02T01:04:00Z", false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o apiOutages
			for i, p := range tc.passes {
				msg, ongoing := o.observe(p.reachable, at(p.at))
				if ongoing != p.ongoing || (p.want == "") != (msg == "") || !strings.Contains(msg, p.want) {
					t.Fatalf("pass %d at %s (reachable %v): got %q ongoing %v, want %q ongoing %v",
						i, p.at, p.reachable, msg, ongoing, p.want, p.ongoing)
				}
			}
		})
	}
}
