// Package trunk runs the real netbridge-gateway on a real 802.1Q trunk:
// the host kernel has no 8021q, so the gateway, the legacy switch and its
// hosts, and a VXLAN node run in network namespaces of a Debian-kernel
// guest under QEMU (internal/qemuguest). The guest program is ./guest.
package trunk

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/qemuguest"
)

// Budgets of the guest under TCG on a shared 2-core host (measured 17-42 s
// boot, 40-109 s boot to power-off, all under load from other builds;
// asserted above the worst seen).
// The build of the two binaries is printed, not asserted: it is the go
// build cache's, shared with every other test.
const (
	bootBudget  = 60 * time.Second
	guestBudget = 3 * time.Minute
	wantChecks  = 39
)

// TestTrunk: two tagged segments of one BridgeConfig on one trunk (plus a
// VLAN no segment uses), double-tagged and PCP-marked frames, and the
// duplicate-address gate on a tagged VLAN, checked by frames in the guest.
func TestTrunk(t *testing.T) {
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

	res, err := qemuguest.Boot(ctx, kdir, tmp, qemuguest.Guest{Init: initBin,
		Files: map[string]string{"bin/netbridge-gateway": gwBin}})
	report(t, "trunk", start, built, res, err, wantChecks, guestBudget)
}

// report prints the run's figures (the guest's TIME lines prefixed with
// the topology name, its FIGURE lines as they are), turns its verdicts into
// subtests and checks the budgets.
func report(t *testing.T, name string, start time.Time, built time.Duration, res qemuguest.Result, err error, checks int, budget time.Duration) {
	t.Helper()
	total := time.Since(start)
	t.Logf("%s_build_s=%.1f %s_boot_ms=%d %s_guest_s=%.1f %s_total_s=%.1f", name,
		built.Seconds(), name, res.Boot.Milliseconds(), name, res.Wall.Seconds(), name, total.Seconds())
	for _, line := range strings.Split(string(res.Console), "\n") {
		if i := strings.Index(line, "TIME "); i >= 0 {
			t.Logf("%s_%s", name, strings.TrimSpace(line[i+len("TIME "):]))
		}
		for _, k := range []string{"INFO ", "FIGURE "} {
			if i := strings.Index(line, k); i >= 0 {
				t.Log(strings.TrimSpace(line[i:]))
			}
		}
	}
	if err != nil {
		t.Error(err)
	}
	qemuguest.Report(t, res.Console).Expect(t, checks, res.Console)
	if res.Boot == 0 || res.Boot > bootBudget {
		t.Errorf("guest boot %s (0: never booted), budget %s", res.Boot, bootBudget)
	}
	if res.Wall > budget {
		t.Errorf("guest boot to power-off took %s, budget %s", res.Wall, budget)
	}
}
