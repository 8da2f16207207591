// Package qemuguest boots a Debian kernel (hack/kernel.sh) under QEMU with
// an initramfs whose /init is a static Go program, and turns the program's
// "PASS name" / "FAIL name: reason" console lines into subtests. The host
// kernel has no 8021q; the tagged-trunk tests run in such a guest. The
// guest side of the protocol is package inguest.
package qemuguest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BootedMarker is the line the guest prints once its modules are loaded;
// the host takes its arrival as the end of the boot.
const BootedMarker = "BOOTED"

// RepoRoot finds the module root (go test runs in the package folder).
func RepoRoot(t testing.TB) string {
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

// Kernel returns the folder hack/kernel.sh prepared (vmlinuz, modules/)
// and fails the test loudly when it or QEMU is missing.
func Kernel(ctx context.Context, t testing.TB, root string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "kernel.sh")).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("hack/kernel.sh (needs apt access for the Debian kernel package and qemu-system-x86): %v\n%s", err, stderr)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not found: run hack/kernel.sh (apt-get install -y --no-install-recommends qemu-system-x86)")
	}
	return strings.TrimSpace(string(out))
}

// BuildStatic builds a static (CGO_ENABLED=0, stripped) binary of pkg, so
// it runs in a guest with no libc.
func BuildStatic(ctx context.Context, t testing.TB, root, pkg, out string) {
	t.Helper()
	build := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", out, pkg)
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
}

// Guest is what goes into the initramfs besides the kernel modules.
type Guest struct {
	// Init is the host path of the static program that becomes /init.
	Init string
	// Files maps a guest path (relative, e.g. "bin/netbridge-gateway") to a
	// host file; they are installed executable.
	Files map[string]string
	// MemoryMB is the guest's RAM (default 512).
	MemoryMB int
	// CPUs is the number of virtual CPUs (default 1; more run on as many
	// host threads: multi-threaded TCG).
	CPUs int
	// QEMUArgs are added to QEMU's command line (e.g. UserNet's NIC).
	QEMUArgs []string
}

// UserNet is the QEMU arguments of one e1000 NIC (eth0 in the guest; the
// e1000 module is in hack/kernel.sh's list) on QEMU's user network: the
// guest is GuestIP/24 and reaches the host's loopback at HostIP. No tap:
// it needs no privilege on the host and nothing to clean up. No option
// ROM: iPXE would only slow the boot.
func UserNet() []string {
	return []string{"-netdev", "user,id=n0,net=10.0.2.0/24,restrict=off", "-device", "e1000,netdev=n0,romfile="}
}

// The addresses of UserNet (QEMU's defaults for that network).
const (
	GuestIP = "10.0.2.15"
	HostIP  = "10.0.2.2"
)

// Result is one boot.
type Result struct {
	Console []byte
	// Boot is QEMU start to the guest's BootedMarker (0 if never seen).
	Boot time.Duration
	// Wall is QEMU start to power-off.
	Wall time.Duration
}

// Boot packs the initramfs into dir and runs the guest to power-off (TCG:
// KVM spins at boot on these machines; one CPU by default keeps the shared
// host usable).
func Boot(ctx context.Context, kernelDir, dir string, g Guest) (Result, error) {
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := packInitramfs(initrd, kernelDir, g); err != nil {
		return Result{}, err
	}
	mem := g.MemoryMB
	if mem == 0 {
		mem = 512
	}
	cpus := max(g.CPUs, 1)
	args := []string{"-accel", "tcg", "-smp", fmt.Sprint(cpus), "-m", fmt.Sprint(mem),
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", filepath.Join(kernelDir, "vmlinuz"), "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 rdinit=/init"}
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", append(args, g.QEMUArgs...)...)
	pr, pw := io.Pipe()
	qemu.Stdout, qemu.Stderr = pw, pw
	var res Result
	var console strings.Builder
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if res.Boot == 0 && strings.Contains(line, BootedMarker) {
				res.Boot = time.Since(start)
			}
			console.WriteString(line + "\n")
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := qemu.Run()
	res.Wall = time.Since(start)
	pw.Close()
	wg.Wait()
	res.Console = []byte(console.String())
	if err != nil {
		return res, fmt.Errorf("qemu: %w", err)
	}
	return res, nil
}

func packInitramfs(path, kernelDir string, g Guest) error {
	entries := []cpioEntry{
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChar | 0o600, major: 5, minor: 1},
		{name: "proc", mode: modeDir | 0o755},
		{name: "sys", mode: modeDir | 0o755},
		{name: "tmp", mode: modeDir | 0o1777},
		{name: "modules", mode: modeDir | 0o755},
	}
	initBin, err := os.ReadFile(g.Init)
	if err != nil {
		return fmt.Errorf("guest init: %w", err)
	}
	entries = append(entries, cpioEntry{name: "init", mode: modeFile | 0o755, data: initBin})
	// Every parent folder before its files (the kernel's unpacker makes
	// none), in a fixed order.
	dirs := map[string]bool{}
	for _, guestPath := range slices.Sorted(maps.Keys(g.Files)) {
		var parents []string
		for d := filepath.Dir(guestPath); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			entries = append(entries, cpioEntry{name: parents[i], mode: modeDir | 0o755})
		}
		hostPath := g.Files[guestPath]
		data, err := os.ReadFile(hostPath)
		if err != nil {
			return fmt.Errorf("guest file %s: %w", guestPath, err)
		}
		entries = append(entries, cpioEntry{name: guestPath, mode: modeFile | 0o755, data: data})
	}
	order, err := os.ReadFile(filepath.Join(kernelDir, "modules", "order"))
	if err != nil {
		return fmt.Errorf("kernel folder %s: %w", kernelDir, err)
	}
	entries = append(entries, cpioEntry{name: "modules/order", mode: modeFile | 0o644, data: order})
	for _, m := range strings.Fields(string(order)) {
		data, err := os.ReadFile(filepath.Join(kernelDir, "modules", m+".ko"))
		if err != nil {
			return fmt.Errorf("kernel module %s: %w", m, err)
		}
		entries = append(entries, cpioEntry{name: "modules/" + m + ".ko", mode: modeFile | 0o644, data: data})
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeInitramfs(f, entries); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Verdicts is what the guest's console said.
type Verdicts struct {
	Passes, Fails int
	// Done: the guest printed DONE (it did not stop early).
	Done bool
}

// Report turns each "PASS name" / "FAIL name: reason" line into a subtest
// of t and returns the counts.
func Report(t *testing.T, console []byte) Verdicts {
	t.Helper()
	var v Verdicts
	sc := bufio.NewScanner(strings.NewReader(string(console)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// The firmware's escape sequences may precede the first line.
		if i := max(strings.LastIndex(line, "PASS "), strings.LastIndex(line, "FAIL ")); i > 0 {
			line = line[i:]
		}
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "PASS "):
			v.Passes++
			t.Run(strings.TrimPrefix(line, "PASS "), func(t *testing.T) {})
		case strings.HasPrefix(line, "FAIL "):
			v.Fails++
			name, reason, _ := strings.Cut(strings.TrimPrefix(line, "FAIL "), ": ")
			t.Run(name, func(t *testing.T) { t.Error(reason) })
		case line == "DONE":
			v.Done = true
		}
	}
	return v
}

// Expect fails t unless the guest finished with exactly want passes and no
// failure (fewer passes means it stopped early), printing the console.
func (v Verdicts) Expect(t *testing.T, want int, console []byte) {
	t.Helper()
	if !v.Done || v.Fails > 0 || v.Passes != want {
		t.Errorf("guest: %d passed, %d failed, finished %t (want %d passes); console:\n%s", v.Passes, v.Fails, v.Done, want, console)
	}
}
