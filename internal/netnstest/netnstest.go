// Package netnstest gives tests their own network namespaces.
//
// Every namespace gets a name unique to the test process (prefix, PID and a
// random suffix), is visible to iproute2 (`ip netns exec NAME ...`, `ip -n
// NAME ...`) and is deleted in t.Cleanup, also when the test fails. Processes
// started with Start are killed before their namespace goes.
//
// The helper needs root and iproute2 (`ip`); it fails the test, never skips
// it, when either is missing.
//
// Typical use:
//
//	a := netnstest.New(t, "gw")
//	b := netnstest.New(t, "host")
//	netnstest.Veth(t, a, "up0", b, "eth0")
//	b.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
//	a.Do(t, func() error { return probe() }) // Go code inside the namespace
package netnstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is one network namespace owned by a test.
type NS struct {
	// Name is the iproute2 name (a file under /run/netns).
	Name string
	// Handle is a netlink handle bound to the namespace, valid until cleanup.
	Handle *netlink.Handle
	// NsHandle is the namespace's file descriptor, valid until cleanup.
	NsHandle netns.NsHandle
}

// New creates a namespace named "<prefix>-<pid>-<random>", brings its
// loopback up and registers its deletion with t.Cleanup. Keep prefix short:
// the whole name stays readable in `ip netns list`.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	requireRoot(t)
	name := UniqueName(prefix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("netnstest: ip netns add %s: %v: %s (install iproute2 and run as root)", name, err, out)
	}
	n := &NS{Name: name, NsHandle: -1}
	t.Cleanup(func() { n.close(t) })

	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("netnstest: open namespace %s: %v", name, err)
	}
	n.NsHandle = h
	nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netnstest: netlink handle in %s: %v", name, err)
	}
	n.Handle = nh
	lo, err := nh.LinkByName("lo")
	if err != nil {
		t.Fatalf("netnstest: lo in %s: %v", name, err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		t.Fatalf("netnstest: set lo up in %s: %v", name, err)
	}
	return n
}

// UniqueName returns "<prefix>-<pid>-<4 hex>", unique across parallel test
// processes on one machine.
func UniqueName(prefix string) string {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never happens on Linux
	}
	return fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(b[:]))
}

func (n *NS) close(t testing.TB) {
	if n.Handle != nil {
		n.Handle.Close()
	}
	if n.NsHandle.IsOpen() {
		_ = n.NsHandle.Close()
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("netnstest: ip netns del %s: %v: %s", n.Name, err, out)
	}
}

// Exec runs a command inside the namespace (`ip netns exec`) and returns its
// combined output.
func (n *NS) Exec(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in netns %s: %s %v: %w: %s", n.Name, name, args, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Run is Exec that fails the test on error (30 s timeout).
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, name, args...)
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	return out
}

// Start starts a long-running command inside the namespace, with stdout and
// stderr going to the test log on failure. The process is killed and reaped
// in t.Cleanup (registered after the namespace's, so it runs first).
func (n *NS) Start(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("netnstest: start %s in %s: %v", name, n.Name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && out.Len() > 0 {
			t.Logf("netnstest: output of %s in %s:\n%s", name, n.Name, out.String())
		}
	})
	return cmd
}

// Do runs fn on an OS thread switched into the namespace, for Go code that
// opens sockets (AF_PACKET, TCP listeners) there. Sockets opened in fn stay
// in the namespace after fn returns. Do returns fn's error.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: if switching back fails, Go kills
		// the thread with the goroutine instead of reusing it in the wrong
		// namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.NsHandle); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			ferr = errors.Join(ferr, fmt.Errorf("leave netns %s: %w", n.Name, err))
		} else {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Veth creates a veth pair with one end (aName) in a and the other (bName)
// in b, both up. The pair disappears with either namespace.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = aName
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: bName, PeerNamespace: netlink.NsFd(b.NsHandle)}
	if err := a.Handle.LinkAdd(v); err != nil {
		t.Fatalf("netnstest: veth %s(%s)-%s(%s): %v", aName, a.Name, bName, b.Name, err)
	}
	for _, end := range []struct {
		ns   *NS
		name string
	}{{a, aName}, {b, bName}} {
		l, err := end.ns.Handle.LinkByName(end.name)
		if err != nil {
			t.Fatalf("netnstest: find %s in %s: %v", end.name, end.ns.Name, err)
		}
		if err := end.ns.Handle.LinkSetUp(l); err != nil {
			t.Fatalf("netnstest: set %s up in %s: %v", end.name, end.ns.Name, err)
		}
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("netnstest: network namespace tests must run as root (sudo go test ...)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("netnstest: iproute2's ip not found: apt-get install -y iproute2")
	}
}
