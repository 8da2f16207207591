package cli

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestLegacyArgs(t *testing.T) {
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	var name string
	var on bool
	cmd.Flags().StringVar(&name, "node-name", "", "")
	cmd.Flags().BoolVar(&on, "leader-elect", false, "")
	Setup(cmd)
	got := LegacyArgs(cmd, []string{"-node-name=a", "-leader-elect", "-node-name", "-b", "-h", "-unknown", "--", "-node-name"})
	want := []string{"--node-name=a", "--leader-elect", "--node-name", "-b", "-h", "-unknown", "--", "-node-name"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	// -help and -version were Go flag's spellings too.
	if got := LegacyArgs(cmd, []string{"-help", "-version"}); !slices.Equal(got, []string{"--help", "--version"}) {
		t.Fatalf("got %q", got)
	}
}

func TestVersionFlag(t *testing.T) {
	cmd := &cobra.Command{Use: "netbridge-x", RunE: func(*cobra.Command, []string) error { t.Fatal("ran"); return nil }}
	Setup(cmd)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "netbridge-x ") || !strings.Contains(out.String(), "(commit ") {
		t.Fatalf("--version printed %q", out.String())
	}
}
