package runbook

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// waveOptions are the flags every `wave` subcommand shares.
type waveOptions struct {
	plan string
}

func (o *cliOptions) waveCommand() *cobra.Command {
	w := &waveOptions{}
	cmd := &cobra.Command{
		Use:   "wave",
		Short: "Cut over the VMs of a Forklift (MTV) Plan as one wave: plan, activate, rollback, verify",
		Long: `A wave is the VMs of one Forklift (MTV) migration Plan
(forklift.konveyor.io/v1beta1, spec.vms[]). Each Plan VM is matched to the VMI
Forklift created for it by Forklift's labels plan=<Plan uid> and
vmID=<spec.vms[].id>; the subcommands then do what the cutover subcommands do
for those VMIs, with the same preflight and output.

A Plan VM without a VMI yet is "not migrated": plan lists it (check
vm-migrated, warn); activate refuses the wave while one is not migrated,
unless --skip-not-migrated; verify reports it as a failed row, unless
--skip-not-migrated; rollback acts on the migrated VMs and names the others
(a rollback must never be blocked by a VM that has nothing to withdraw).`,
	}
	cmd.PersistentFlags().StringVar(&w.plan, "mtv-plan", "", "the Forklift Plan, NAMESPACE/NAME (or NAME in --namespace)")
	_ = cmd.MarkPersistentFlagRequired("mtv-plan")
	cmd.AddCommand(o.wavePlanCommand(w), o.waveActionCommand(w, nbv1.CutoverActive), o.waveActionCommand(w, nbv1.CutoverRollback), o.waveVerifyCommand(w))
	return cmd
}

func (o *cliOptions) planKey(arg string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(arg, "/")
	if !ok {
		ns, name = o.namespace, arg
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, fmt.Errorf("--mtv-plan %q: want NAMESPACE/NAME", arg)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// wave connects, collects, reads the Plan's wave and loads its VMIs into
// the snapshot (Forklift's VMIs carry no netbridge label, so Collect does
// not list them).
func (o *cliOptions) wave(ctx context.Context, w *waveOptions) (client.Client, *Snapshot, Wave, error) {
	key, err := o.planKey(w.plan)
	if err != nil {
		return nil, nil, Wave{}, err
	}
	c, snap, _, err := o.snapshot(ctx, nil, false)
	if err != nil {
		return nil, nil, Wave{}, err
	}
	wave, err := LoadWave(ctx, c, key)
	if err != nil {
		return nil, nil, Wave{}, err
	}
	for _, vm := range wave.VMIs() {
		if _, err := snap.LoadVMI(ctx, c, vm); err != nil {
			return nil, nil, Wave{}, err
		}
	}
	return c, snap, wave, nil
}

// waveRun is what a wave subcommand does once the wave is read.
type waveRun func(ctx context.Context, c client.Client, output string, snap *Snapshot, wave Wave) error

// waveSubcommand reads the wave (checking -o first) and hands it to run.
func (o *cliOptions) waveSubcommand(w *waveOptions, use, short string, run waveRun) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, snap, wave, err := o.wave(cmd.Context(), w)
			if err != nil {
				return err
			}
			return run(cmd.Context(), c, output, snap, wave)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func (o *cliOptions) wavePlanCommand(w *waveOptions) *cobra.Command {
	return o.waveSubcommand(w, "plan", "List the Plan's VMs (migrated or not) and run the cutover preflight for the migrated ones",
		func(_ context.Context, _ client.Client, output string, snap *Snapshot, wave Wave) error {
			p := BuildWavePlan(snap, wave)
			return o.printPlan(output, p, p.Plan)
		})
}

func (o *cliOptions) waveActionCommand(w *waveOptions, action string) *cobra.Command {
	var (
		timeout, interval time.Duration
		skip              bool
	)
	use, short := "activate", "Activate the Plan's VMs and wait until their routes are advertised (as cutover activate)"
	if action == nbv1.CutoverRollback {
		use, short = "rollback", "Roll the Plan's migrated VMs back and wait until their routes are withdrawn everywhere (as cutover rollback)"
	}
	cmd := o.waveSubcommand(w, use, short, func(ctx context.Context, c client.Client, output string, _ *Snapshot, wave Wave) error {
		if missing := wave.NotMigrated(); len(missing) > 0 {
			var names []string
			for _, v := range missing {
				names = append(names, v.String())
			}
			if action == nbv1.CutoverActive && !skip {
				return fmt.Errorf("plan %s: %d VM(s) not migrated yet (no VMI): %s; nothing written: migrate them first or pass --skip-not-migrated",
					wave.Plan, len(missing), strings.Join(names, ", "))
			}
			fmt.Fprintf(o.stderr, "skipping %d VM(s) of plan %s not migrated yet: %s\n", len(missing), wave.Plan, strings.Join(names, ", "))
		}
		vms := wave.VMIs()
		if len(vms) == 0 {
			return fmt.Errorf("plan %s: no VM migrated yet, nothing to %s", wave.Plan, use)
		}
		return o.runCutover(ctx, c, action, vms, timeout, interval, output)
	})
	if action == nbv1.CutoverActive {
		cmd.Flags().BoolVar(&skip, "skip-not-migrated", false, "activate the migrated VMs even when some Plan VMs have no VMI yet")
	}
	addCutoverFlags(cmd, &timeout, &interval)
	return cmd
}

func (o *cliOptions) waveVerifyCommand(w *waveOptions) *cobra.Command {
	var skip bool
	cmd := o.waveSubcommand(w, "verify", "Check the Plan's VMs end to end from the active gateway (as verify); a VM not migrated fails the wave",
		func(_ context.Context, _ client.Client, output string, snap *Snapshot, wave Wave) error {
			return o.printVerify(output, WaveVerify(snap, wave, skip))
		})
	cmd.Flags().BoolVar(&skip, "skip-not-migrated", false, "verify only the migrated VMs")
	return cmd
}
