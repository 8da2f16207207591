package vlan

import (
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// TestReleasePort: a port enslaved by hand leaves the segment bridge; a
// port of another bridge, a missing port or bridge are left alone.
func TestReleasePort(t *testing.T) {
	ns := netnstest.New(t, "nb-rel")
	ns.Run(t, "ip", "link", "add", "nb-br-7", "type", "bridge")
	ns.Run(t, "ip", "link", "add", "other0", "type", "bridge")
	ns.Run(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	ns.Run(t, "ip", "link", "set", "up0", "master", "nb-br-7")
	ns.Run(t, "ip", "link", "set", "up1", "master", "other0")
	d := New(ns.Handle, zaptest.NewLogger(t))
	for _, c := range []struct {
		bridge, port string
		want         bool
	}{{"nb-br-7", "up0", true}, {"nb-br-7", "up0", false}, {"nb-br-7", "up1", false}, {"nb-br-7", "gone0", false}, {"nb-br-9", "up1", false}} {
		got, err := d.ReleasePort(c.bridge, c.port)
		if err != nil || got != c.want {
			t.Errorf("ReleasePort(%s, %s) = %v, %v; want %v", c.bridge, c.port, got, err, c.want)
		}
	}
	if out := ns.Run(t, "ip", "-o", "link", "show", "up0"); strings.Contains(out, "master") {
		t.Errorf("up0 still enslaved: %s", out)
	}
	if out := ns.Run(t, "ip", "-o", "link", "show", "up1"); !strings.Contains(out, "master other0") {
		t.Errorf("up1 left its foreign bridge: %s", out)
	}
}
