// Command netbridgectl is the migration engineer's cutover runbook: status,
// cutover plan/activate/rollback and verify. The logic lives in package runbook.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/netbridge-io/netbridge/internal/cli"
	"github.com/netbridge-io/netbridge/runbook"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cmd := newCommand(os.Stdout, os.Stderr)
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

const examples = `  # Where everything stands (segments, gateways, endpoints, refusals):
  netbridgectl status

  # One wave: what will happen, then do it, then check it:
  netbridgectl cutover plan -n erp vm1 vm2
  netbridgectl cutover activate -n erp vm1 vm2 --timeout 60s
  netbridgectl verify -n erp vm1 vm2

  # Undo it:
  netbridgectl cutover rollback -n erp vm1`

func newCommand(stdout, stderr io.Writer) *cobra.Command {
	cmd := runbook.NewCommand(stdout, stderr)
	cmd.Example = examples
	cli.Setup(cmd)
	cmd.SetArgs(cli.LegacyArgs(cmd, os.Args[1:]))
	return cmd
}
