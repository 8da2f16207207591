// Package inguest is the guest side of package qemuguest: the /init
// program calls Boot first, prints one verdict per check through Checker,
// and ends with PowerOff.
package inguest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// Boot mounts /proc, /sys, /dev and /tmp, loads /modules in the order of
// /modules/order (dependencies first: there is no modprobe), brings lo up
// and prints the booted marker the host times.
func Boot() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	order, err := os.ReadFile("/modules/order")
	if err != nil {
		return err
	}
	for _, m := range strings.Fields(string(order)) {
		f, err := os.Open(filepath.Join("/modules", m+".ko"))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load module %s: %w", m, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	fmt.Println("BOOTED") // qemuguest.BootedMarker
	return nil
}

// Checker prints the verdict of each check.
type Checker struct{ Failed bool }

// Check prints "PASS name" or "FAIL name: reason" and tells whether to go on.
func (c *Checker) Check(name string, err error) bool {
	if err != nil {
		c.Failed = true
		fmt.Printf("FAIL %s: %s\n", name, strings.ReplaceAll(err.Error(), "\n", "; "))
		return false
	}
	fmt.Printf("PASS %s\n", name)
	return true
}

// PowerOff prints DONE and the overall result and powers the guest off
// (when it is /init).
func PowerOff(failed bool) {
	fmt.Println("DONE")
	if failed {
		fmt.Println("RESULT FAIL")
	} else {
		fmt.Println("RESULT PASS")
	}
	unix.Sync()
	if os.Getpid() == 1 {
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
}

// NewNS makes an unnamed network namespace with lo up (the guest has no
// `ip netns`).
func NewNS(name string) (*netnstest.NS, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return
		}
		h, err := netns.New()
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{ns: h, err: netns.Set(orig)}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("new netns %s: %w", name, r.err)
	}
	h, err := netlink.NewHandleAt(r.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	n := &netnstest.NS{Name: name, Handle: h, NsHandle: r.ns}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	return n, h.LinkSetUp(lo)
}
