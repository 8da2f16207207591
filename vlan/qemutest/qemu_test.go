// Package qemutest boots a Debian kernel with 802.1Q under QEMU and runs
// the vlan data plane's tagged-trunk checks inside it (the host kernel has
// no 8021q). The guest program is ./guest; booting is internal/qemuguest.
package qemutest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/qemuguest"
)

// TestTaggedTrunkInQEMU builds the guest, packs it with the kernel modules
// into an initramfs, boots it and turns each console verdict into a
// subtest.
func TestTaggedTrunkInQEMU(t *testing.T) {
	root := qemuguest.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	kdir := qemuguest.Kernel(ctx, t, root)
	tmp := t.TempDir()
	initBin := filepath.Join(tmp, "init")
	qemuguest.BuildStatic(ctx, t, root, "./vlan/qemutest/guest", initBin)

	res, err := qemuguest.Boot(ctx, kdir, tmp, qemuguest.Guest{Init: initBin})
	t.Logf("guest boot %s, boot + checks + power-off: %s wall", res.Boot.Round(100*time.Millisecond), res.Wall.Round(100*time.Millisecond))
	if err != nil {
		t.Error(err)
	}
	// Every check of the guest is expected; fewer means it stopped early.
	qemuguest.Report(t, res.Console).Expect(t, 23, res.Console)
}
