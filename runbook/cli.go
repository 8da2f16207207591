package runbook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/scheme"
)

// ErrChecksFailed is wrapped by the errors of `cutover plan` and `verify`
// when the report says something is off (the report is printed first).
var ErrChecksFailed = errors.New("checks failed")

// cliOptions are the values of the global flags, owned by one command tree.
type cliOptions struct {
	kubeconfig string
	context    string
	namespace  string
	stdout     io.Writer
	stderr     io.Writer
}

// NewCommand builds the netbridgectl command tree. Each call returns a fresh
// tree with its own flag values, so tests run commands in-process side by side.
func NewCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &cliOptions{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "netbridgectl",
		Short: "Cutover runbook for netbridge: status, cutover plan/activate/rollback, verify, segment plan/advance/rollback, wave (Forklift plans)",
		Long: `netbridgectl drives the migration of VMs behind netbridge, wave by wave.

Arguments name VMs as NAME (in --namespace) or NAMESPACE/NAME, and segments as
BRIDGECONFIG.SEGMENT (an argument is a segment when that BridgeConfig has that
segment). The cluster is found like kubectl: --kubeconfig, $KUBECONFIG, then
~/.kube/config.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	pf.StringVar(&o.context, "context", "", "kubeconfig context to use")
	pf.StringVarP(&o.namespace, "namespace", "n", "default", "namespace of VMs named without one")

	root.AddCommand(o.statusCommand(), o.cutoverCommand(), o.verifyCommand(), o.segmentCommand(), o.waveCommand())
	return root
}

func addOutputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", OutputTable, "output format: table, json or yaml")
}

func checkOutput(format string) error {
	switch format {
	case OutputTable, OutputJSON, OutputYAML:
		return nil
	}
	return fmt.Errorf("--output %q: want table, json or yaml", format)
}

// client loads the kubeconfig with kubectl's rules.
func (o *cliOptions) client(ctx context.Context) (client.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	// A cutover polls several lists per second; client-go's default (5
	// QPS) would throttle it. kubectl raises it too.
	cfg.QPS, cfg.Burst = 50, 100
	// Bounded: a hung API server is an error naming it, not a hung CLI.
	if err := BoundServer(ctx, cfg); err != nil {
		return nil, err
	}
	// VMIs go through unstructured (kubevirt.io/api is not a dependency).
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

// snapshot connects, collects and resolves the arguments.
func (o *cliOptions) snapshot(ctx context.Context, args []string, allowSegments bool) (client.Client, *Snapshot, []Target, error) {
	c, err := o.client(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	snap, err := Collect(ctx, c)
	if err != nil {
		return nil, nil, nil, err
	}
	if args == nil {
		return c, snap, nil, nil
	}
	targets, err := ResolveTargets(args, o.namespace, snap, allowSegments)
	if err != nil {
		return nil, nil, nil, err
	}
	// VMs named explicitly must exist: a typo is an error, not an empty plan.
	for _, t := range targets {
		if t.VM == nil {
			continue
		}
		if _, err := snap.LoadVMI(ctx, c, *t.VM); err != nil && len(snap.EndpointsOfVM(*t.VM)) == 0 {
			return nil, nil, nil, err
		}
	}
	return c, snap, targets, nil
}

func (o *cliOptions) statusCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Segments, gateways (BGP peers, prefixes) and endpoints (VMs, IPs, state, refusals)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			_, snap, _, err := o.snapshot(cmd.Context(), nil, false)
			if err != nil {
				return err
			}
			return Render(o.stdout, output, Status(snap))
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func (o *cliOptions) cutoverCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cutover",
		Short: "Plan, activate and roll back the cutover of VMs",
	}
	cmd.AddCommand(o.planCommand(), o.actionCommand(nbv1.CutoverActive), o.actionCommand(nbv1.CutoverRollback))
	return cmd
}

func (o *cliOptions) planCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "plan SEGMENT|VM...",
		Short: "Show which routes a cutover will advertise, from which gateway, and run the preflight checks",
		Long: `Show, for each VM (or each VM of a segment), which host routes the cutover will
advertise and from which gateway, and run the preflight checks: segment
programmed on the active gateway, BGP Established there, no conflicts, no
duplicate address seen. Exits non-zero when a check fails.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			_, snap, targets, err := o.snapshot(cmd.Context(), args, true)
			if err != nil {
				return err
			}
			plan := BuildPlan(snap, targets)
			return o.printPlan(output, plan, plan)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func (o *cliOptions) actionCommand(action string) *cobra.Command {
	var (
		timeout  time.Duration
		interval time.Duration
		output   string
	)
	use, short, long := "activate VM...", "Activate VMs and wait until their routes are advertised",
		`Set netbridge.io/cutover=active on each VMI, then wait until the active
gateway advertises the VM's host routes (endpoint Advertised=True, or the
prefixes in the active BridgeGateway's advertised list). Fails at once when the
controller or a gateway refuses (conflict, duplicate address with the MAC that
answered), and after --timeout when the routes are still not advertised.`
	if action == nbv1.CutoverRollback {
		use, short, long = "rollback VM...", "Roll VMs back and wait until their routes are withdrawn everywhere",
			`Set netbridge.io/cutover=rollback on each VMI, then wait until none of the VM's
host routes is in any BridgeGateway's advertised list (active or standby).
Fails after --timeout, naming the gateways that still advertise.`
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, _, targets, err := o.snapshot(cmd.Context(), args, false)
			if err != nil {
				return err
			}
			vms := make([]types.NamespacedName, 0, len(targets))
			for _, t := range targets {
				vms = append(vms, *t.VM)
			}
			return o.runCutover(cmd.Context(), c, action, vms, timeout, interval, output)
		},
	}
	addCutoverFlags(cmd, &timeout, &interval)
	addOutputFlag(cmd, &output)
	return cmd
}

func addCutoverFlags(cmd *cobra.Command, timeout, interval *time.Duration) {
	cmd.Flags().DurationVar(timeout, "timeout", 60*time.Second, "how long to wait for the gateways")
	cmd.Flags().DurationVar(interval, "poll-interval", 500*time.Millisecond, "how often to read the gateways' status")
}

// printPlan renders report (a Plan, or a report embedding it) and fails
// when plan's preflight did.
func (o *cliOptions) printPlan(output string, report interface{}, plan Plan) error {
	if err := Render(o.stdout, output, report); err != nil {
		return err
	}
	if failed := plan.Failed(); len(failed) > 0 {
		var names []string
		for _, c := range failed {
			names = append(names, fmt.Sprintf("%s (%s): %s", c.Name, c.Subject, c.Message))
		}
		return fmt.Errorf("%w: preflight: %s", ErrChecksFailed, strings.Join(names, "; "))
	}
	return nil
}

// runCutover runs a Cutover and renders its results, also when it failed.
func (o *cliOptions) runCutover(ctx context.Context, c client.Client, action string, vms []types.NamespacedName, timeout, interval time.Duration, output string) error {
	run := &Cutover{Client: c, Progress: o.stderr, Timeout: timeout, Interval: interval}
	results, err := run.Run(ctx, action, vms)
	if results != nil {
		if rerr := Render(o.stdout, output, results); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

func (o *cliOptions) verifyCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "verify SEGMENT|VM...",
		Short: "Check active endpoints end to end from the active gateway: route, FDB, ARP reachability",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			_, snap, targets, err := o.snapshot(cmd.Context(), args, true)
			if err != nil {
				return err
			}
			return o.printVerify(output, Verify(snap, targets))
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// printVerify renders a verify report and fails when a row is not OK.
func (o *cliOptions) printVerify(output string, report VerifyReport) error {
	if err := Render(o.stdout, output, report); err != nil {
		return err
	}
	if !report.OK {
		n := 0
		for _, r := range report.Rows {
			if !r.OK {
				n++
			}
		}
		return fmt.Errorf("%w: verify: %d of %d endpoint(s) not OK", ErrChecksFailed, n, len(report.Rows))
	}
	return nil
}
