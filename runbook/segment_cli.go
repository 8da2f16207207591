package runbook

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func (o *cliOptions) segmentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "segment",
		Short: "Plan, advance and roll back a segment's phase (Extended → Routed → Completed)",
		Long: `A segment moves Extended → Routed → Completed (advance) and back (rollback),
one phase at a time, each behind a preflight:

  Extended → Routed     every BGP session of every gateway of the segment
                        Established; no endpoint of the segment refused.
  Routed → Completed    every managed VM of the segment Active and verified;
                        the active gateway's ARP sweep of the subnet on the
                        VLAN side (newer than the command) found nobody but
                        migrated VMs; gatewayAddress set.
  Completed → Routed    every BGP session Established.

advance and rollback then write the phase and wait until every gateway has
programmed it and advertises the phase's routes; they exit non-zero with the
reason when the preflight refuses or the wait times out.`,
	}
	cmd.AddCommand(o.segmentPlanCommand(), o.segmentMoveCommand(SegmentAdvance), o.segmentMoveCommand(SegmentRollback))
	return cmd
}

func (o *cliOptions) segmentArg(args []string) (SegmentRef, error) {
	ref, ok := ParseSegmentRef(args[0])
	if !ok {
		return SegmentRef{}, fmt.Errorf("argument %q: want BRIDGECONFIG.SEGMENT", args[0])
	}
	return ref, nil
}

func (o *cliOptions) segmentPlanCommand() *cobra.Command {
	var output string
	var rollback bool
	cmd := &cobra.Command{
		Use:   "plan BRIDGECONFIG.SEGMENT",
		Short: "Show what the segment's next transition would do and its preflight, changing nothing",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ref, err := o.segmentArg(args)
			if err != nil {
				return err
			}
			_, snap, _, err := o.snapshot(cmd.Context(), nil, true)
			if err != nil {
				return err
			}
			dir := SegmentAdvance
			if rollback {
				dir = SegmentRollback
			}
			plan := BuildSegmentPlan(snap, ref, dir, time.Time{})
			if err := Render(o.stdout, output, plan); err != nil {
				return err
			}
			if !plan.Ready {
				bad := append(plan.Failed(), plan.Pending()...)
				return fmt.Errorf("%w: preflight: %s", ErrChecksFailed, failedText(bad))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&rollback, "rollback", false, "plan the rollback instead of the advance")
	addOutputFlag(cmd, &output)
	return cmd
}

func (o *cliOptions) segmentMoveCommand(direction string) *cobra.Command {
	var (
		timeout, interval time.Duration
		output            string
	)
	short := "Run the preflight, move the segment one phase forward and wait for the gateways"
	if direction == SegmentRollback {
		short = "Run the preflight, move the segment one phase back and wait for the gateways"
	}
	cmd := &cobra.Command{
		Use:   direction + " BRIDGECONFIG.SEGMENT",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ref, err := o.segmentArg(args)
			if err != nil {
				return err
			}
			c, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			run := &SegmentTransition{Client: c, Progress: o.stderr, Timeout: timeout, Interval: interval}
			res, err := run.Run(cmd.Context(), ref, direction)
			if rerr := Render(o.stdout, output, res); rerr != nil && err == nil {
				err = rerr
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait for the preflight (a fresh sweep) and for the gateways, each")
	cmd.Flags().DurationVar(&interval, "poll-interval", 500*time.Millisecond, "how often to read the gateways' status")
	addOutputFlag(cmd, &output)
	return cmd
}
