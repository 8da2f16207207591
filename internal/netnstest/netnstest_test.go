package netnstest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVethPingAndCleanup(t *testing.T) {
	var names []string
	t.Run("topology", func(t *testing.T) {
		a := New(t, "nt-a")
		b := New(t, "nt-b")
		names = []string{a.Name, b.Name}
		Veth(t, a, "v0", b, "v1")
		a.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "v0")
		b.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "v1")
		out := a.Run(t, "ping", "-c1", "-W2", "192.0.2.2")
		if !strings.Contains(out, "1 received") {
			t.Fatalf("ping: %s", out)
		}
		// Do runs Go code in the namespace: the listener sees b's address.
		err := b.Do(func() error {
			l, err := net.Listen("tcp", "192.0.2.2:0")
			if err != nil {
				return err
			}
			return l.Close()
		})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		a.Start(t, "sleep", "60")
	})
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after cleanup (stat: %v)", n, err)
		}
	}
}
