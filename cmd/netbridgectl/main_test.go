package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	cmd := newCommand(&out, &out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"netbridgectl status\n", "netbridgectl cutover activate", "netbridgectl verify", "--version"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	cmd = newCommand(&out, &out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "netbridgectl ") || !strings.Contains(out.String(), "commit") {
		t.Fatalf("--version: %q", out.String())
	}
}
