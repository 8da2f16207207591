// Package cli holds what the three binaries share on their command line:
// one flag convention (cobra/pflag, `--flag`), `--version`, and the old
// single-dash spelling of Go's flag package (`-flag`), still accepted.
package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Set at link time: go build -ldflags "-X github.com/netbridge-io/netbridge/internal/cli.version=v0.3.0
// -X github.com/netbridge-io/netbridge/internal/cli.commit=$(git rev-parse HEAD)" (the Makefile and
// the Dockerfile do). Never written at run time.
var (
	version = ""
	commit  = ""
)

// Version is "VERSION (commit COMMIT, GOVERSION)". Without -ldflags the
// version is the module's (or "devel") and the commit comes from the
// build's VCS stamp (vcs.revision, "+dirty" when modified).
func Version() string {
	v, c := version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		if c == "" {
			c = vcsRevision(bi.Settings)
		}
	}
	if v == "" {
		v = "devel"
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s)", v, c, runtime.Version())
}

func vcsRevision(settings []debug.BuildSetting) string {
	var rev string
	dirty := false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "+dirty"
	}
	return rev
}

// Setup gives cmd the shared conventions: `--version` (printing Version),
// `--help`, and no usage dump after a runtime error.
func Setup(cmd *cobra.Command) {
	cmd.Version = Version()
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	cmd.InitDefaultHelpFlag()
	cmd.InitDefaultVersionFlag()
}

// LegacyArgs rewrites the single-dash long flags of Go's flag package
// (`-node-name=x`, `-config f`) into pflag's `--node-name=x`, for the flags
// cmd knows, so that existing invocations and manifests keep working.
// Shorthands (`-h`), values and everything after `--` are left alone.
func LegacyArgs(cmd *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if cmd.Flags().Lookup(name) != nil {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}
