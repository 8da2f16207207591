package qemutest

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repoRoot finds the module root (go test runs in the package folder).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test folder")
		}
		dir = parent
	}
}

// TestTaggedTrunkInQEMU builds the guest, packs it with the kernel modules
// into an initramfs, boots it with QEMU (TCG: KVM hangs on these machines)
// and turns each "PASS name" / "FAIL name: reason" console line into a
// subtest.
func TestTaggedTrunkInQEMU(t *testing.T) {
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	kernelOut, err := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "kernel.sh")).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("hack/kernel.sh (needs apt access for %s and qemu-system-x86): %v\n%s", "the Debian kernel package", err, stderr)
	}
	kdir := strings.TrimSpace(string(kernelOut))
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("qemu-system-x86_64 not found: apt-get install -y --no-install-recommends qemu-system-x86")
	}

	tmp := t.TempDir()
	guest := filepath.Join(tmp, "init")
	build := exec.CommandContext(ctx, "go", "build", "-o", guest, "./vlan/qemutest/guest")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build guest: %v\n%s", err, out)
	}

	entries := []cpioEntry{
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChar | 0o600, major: 5, minor: 1},
		{name: "proc", mode: modeDir | 0o755},
		{name: "sys", mode: modeDir | 0o755},
		{name: "modules", mode: modeDir | 0o755},
	}
	initBin, err := os.ReadFile(guest)
	if err != nil {
		t.Fatal(err)
	}
	entries = append(entries, cpioEntry{name: "init", mode: modeFile | 0o755, data: initBin})
	order, err := os.ReadFile(filepath.Join(kdir, "modules", "order"))
	if err != nil {
		t.Fatalf("kernel folder %s: %v", kdir, err)
	}
	entries = append(entries, cpioEntry{name: "modules/order", mode: modeFile | 0o644, data: order})
	for _, m := range strings.Fields(string(order)) {
		data, err := os.ReadFile(filepath.Join(kdir, "modules", m+".ko"))
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, cpioEntry{name: "modules/" + m + ".ko", mode: modeFile | 0o644, data: data})
	}
	initrd := filepath.Join(tmp, "initrd.gz")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeInitramfs(f, entries); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-smp", "2", "-m", "1024",
		"-nographic", "-no-reboot", "-kernel", filepath.Join(kdir, "vmlinuz"), "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1")
	out, err := qemu.CombinedOutput()
	elapsed := time.Since(start)
	t.Logf("guest boot + checks + power-off: %s wall", elapsed.Round(100*time.Millisecond))
	if err != nil {
		t.Errorf("qemu: %v", err)
	}

	var passes, fails int
	done := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		// The firmware's escape sequences may precede the first line.
		if i := max(strings.LastIndex(line, "PASS "), strings.LastIndex(line, "FAIL ")); i > 0 {
			line = line[i:]
		}
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "PASS "):
			passes++
			t.Run(strings.TrimPrefix(line, "PASS "), func(t *testing.T) {})
		case strings.HasPrefix(line, "FAIL "):
			fails++
			name, reason, _ := strings.Cut(strings.TrimPrefix(line, "FAIL "), ": ")
			t.Run(name, func(t *testing.T) { t.Error(reason) })
		case line == "DONE":
			done = true
		}
	}
	// Every check of the guest is expected; fewer means it stopped early.
	const wantChecks = 23
	if !done || fails > 0 || passes != wantChecks {
		t.Errorf("guest: %d passed, %d failed, finished %t (want %d passes); console:\n%s", passes, fails, done, wantChecks, out)
	}
}
