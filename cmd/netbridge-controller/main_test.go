package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/netbridge-io/netbridge/internal/cli"
)

// TestFlags: the old single-dash spelling still parses, the defaults bind
// to loopback on ports no other netbridge part or controller-runtime
// default uses, --kube-api-qps 0 keeps client-go's meaning (its default).
func TestFlags(t *testing.T) {
	cmd := newCommand()
	args := cli.LegacyArgs(cmd, []string{"-leader-elect", "-namespace=nb", "-kube-api-qps", "0", "-segment-workers=3"})
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags()
	for name, want := range map[string]string{"leader-elect": "true", "namespace": "nb", "kube-api-qps": "0", "segment-workers": "3",
		"metrics-bind-address": "127.0.0.1:9652", "health-probe-bind-address": "127.0.0.1:9653"} {
		if got := f.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
	for _, a := range []string{"127.0.0.1:9652", "127.0.0.1:9653"} {
		for _, taken := range []string{":8080", ":8081", ":9650", ":9651"} {
			if strings.HasSuffix(a, taken) {
				t.Errorf("default %s collides with %s", a, taken)
			}
		}
	}
	if !strings.Contains(f.Lookup("kube-api-qps").Usage, "0: client-go's default") {
		t.Errorf("--kube-api-qps usage: %s", f.Lookup("kube-api-qps").Usage)
	}
}

func TestHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	cmd := newCommand()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--leader-elect --metrics-bind-address=:8080", "--kubeconfig=", "--version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	cmd = newCommand()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "netbridge-controller ") || !strings.Contains(out.String(), "commit") {
		t.Fatalf("--version: %q", out.String())
	}
}
