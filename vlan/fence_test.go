package vlan

import (
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// TestFenceDeadManSwitch: a guarded uplink port bridges only while the
// agent keeps it alive; without refreshes the kernel drops its frames
// within the TTL, and an unguarded port is never touched.
func TestFenceDeadManSwitch(t *testing.T) {
	sw := netnstest.New(t, "fsw")
	legacy := netnstest.New(t, "flg")
	vm := netnstest.New(t, "fvm")
	other := netnstest.New(t, "fot")
	sw.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.Run(t, "ip", "link", "set", "br0", "up")
	for _, p := range []struct {
		ns       *netnstest.NS
		port, ip string
	}{{legacy, "up0", "10.9.0.1/24"}, {vm, "vx0", "10.9.0.2/24"}, {other, "p2", "10.9.0.3/24"}} {
		netnstest.Veth(t, sw, p.port, p.ns, "eth0")
		sw.Run(t, "ip", "link", "set", p.port, "master", "br0", "up")
		p.ns.Run(t, "ip", "addr", "add", p.ip, "dev", "eth0")
		p.ns.Run(t, "ip", "link", "set", "eth0", "up")
	}
	reach := func(from *netnstest.NS, ip string) bool {
		_, err := from.Exec(t.Context(), "ping", "-c", "1", "-W", "1", ip)
		return err == nil
	}
	if !reach(legacy, "10.9.0.2") {
		t.Fatal("no connectivity before the fence")
	}
	const ttl = 600 * time.Millisecond
	f, err := NewFenceIn(sw.NsHandle, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Guard([]string{"up0"}, map[string]time.Duration{"up0": ttl}); err != nil {
		t.Fatal(err)
	}
	if !reach(legacy, "10.9.0.2") {
		t.Fatal("an alive guarded port must bridge")
	}
	if alive, err := f.Alive(); err != nil || len(alive) != 1 || alive[0] != "up0" {
		t.Fatalf("Alive() = %v, %v; want [up0]", alive, err)
	}
	// Keep refreshing for a few TTLs: never a gap.
	for i := 0; i < 4; i++ {
		time.Sleep(ttl / 2)
		if err := f.Guard([]string{"up0"}, map[string]time.Duration{"up0": ttl}); err != nil {
			t.Fatal(err)
		}
		if !reach(legacy, "10.9.0.2") {
			t.Fatalf("refresh %d: the port stopped bridging while it was kept alive", i)
		}
	}
	// The agent "dies": no more refreshes.
	time.Sleep(ttl + 200*time.Millisecond)
	if reach(legacy, "10.9.0.2") {
		t.Fatal("the guarded port still bridges after its TTL ran out")
	}
	if alive, err := f.Alive(); err != nil || len(alive) != 0 {
		t.Fatalf("Alive() after expiry = %v, %v; want none", alive, err)
	}
	if !reach(other, "10.9.0.2") {
		t.Fatal("an unguarded port was affected by the fence")
	}
	// A restarted agent adopts the table and brings the port back.
	f2, err := NewFenceIn(sw.NsHandle, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Guard([]string{"up0"}, map[string]time.Duration{"up0": ttl}); err != nil {
		t.Fatal(err)
	}
	if !reach(legacy, "10.9.0.2") {
		t.Fatal("the port did not bridge again once refreshed")
	}
	// Adoption keeps the running elements: a new Fence does not cut it.
	if _, err := NewFenceIn(sw.NsHandle, ttl); err != nil {
		t.Fatal(err)
	}
	if !reach(legacy, "10.9.0.2") {
		t.Fatal("adopting the fence cut an alive port")
	}
	if err := f2.Remove(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	if !reach(legacy, "10.9.0.2") {
		t.Fatal("the port stays cut after the fence was removed")
	}
}
