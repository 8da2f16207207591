package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/gateway/daemon"
	"github.com/netbridge-io/netbridge/internal/cli"
)

func parse(t *testing.T, args ...string) (daemon.Options, string) {
	t.Helper()
	var got daemon.Options
	var level string
	cmd := newCommand(func(o daemon.Options, l string) error { got, level = o, l; return nil })
	cmd.SetArgs(cli.LegacyArgs(cmd, args))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	return got, level
}

// TestOldInvocationsParse: Go flag's single-dash spelling (the manifests
// and scripts written for it) gives the same options as pflag's.
func TestOldInvocationsParse(t *testing.T) {
	old, oldLevel := parse(t, "-role=node", "-node-name", "n1", "-config=/etc/nb.yaml", "-vtep", "192.0.2.10",
		"-metrics-bind-address=", "-probe-wait=200ms", "-kube-api-qps", "7.5", "-log-level=debug")
	cur, curLevel := parse(t, "--role=node", "--node-name", "n1", "--config=/etc/nb.yaml", "--vtep", "192.0.2.10",
		"--metrics-bind-address=", "--probe-wait=200ms", "--kube-api-qps", "7.5", "--log-level=debug")
	if old.Role != gateway.RoleNode || old.NodeName != "n1" || old.ConfigFile != "/etc/nb.yaml" ||
		old.VTEP != netip.MustParseAddr("192.0.2.10") || old.MetricsAddr != "" || old.ProbeWait != 200*time.Millisecond ||
		old.KubeQPS != 7.5 || oldLevel != "debug" {
		t.Fatalf("old spelling parsed as %+v (%s)", old, oldLevel)
	}
	if old.Role != cur.Role || old.NodeName != cur.NodeName || old.VTEP != cur.VTEP || old.ProbeWait != cur.ProbeWait || oldLevel != curLevel {
		t.Fatalf("old %+v != new %+v", old, cur)
	}
}

// TestDefaultsBindLoopback: metrics, health and status are not served on
// every address of a host-network agent unless asked.
func TestDefaultsBindLoopback(t *testing.T) {
	o, _ := parse(t)
	if o.MetricsAddr != "127.0.0.1:9650" || o.HealthAddr != "127.0.0.1:9651" {
		t.Fatalf("defaults %q %q", o.MetricsAddr, o.HealthAddr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-help"}} {
		var out bytes.Buffer
		cmd := newCommand(func(daemon.Options, string) error { t.Fatal("ran"); return nil })
		cmd.SetOut(&out)
		cmd.SetArgs(cli.LegacyArgs(cmd, args))
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"--role=gateway --node-name=$NODE_NAME", "--role=node", "--config=/etc/netbridge/bridge.yaml --vtep=", "--version", "--metrics-bind-address"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: help lacks %q:\n%s", args, want, out.String())
			}
		}
	}
	var out bytes.Buffer
	cmd := newCommand(func(daemon.Options, string) error { t.Fatal("ran"); return nil })
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "netbridge-gateway ") || !strings.Contains(out.String(), "commit") {
		t.Fatalf("--version: %q", out.String())
	}
}
