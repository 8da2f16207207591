package runbook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// ErrSegmentFailed is wrapped by the error of `segment advance|rollback`
// when the preflight refused or the gateways did not reach the phase.
var ErrSegmentFailed = errors.New("segment transition failed")

// SegmentResult is what `segment advance|rollback` prints.
type SegmentResult struct {
	Segment string            `json:"segment"`
	From    nbv1.SegmentPhase `json:"from"`
	To      nbv1.SegmentPhase `json:"to,omitempty"`
	// Changed: the phase was written (the preflight passed).
	Changed bool    `json:"changed"`
	Done    bool    `json:"done"`
	Message string  `json:"message"`
	Seconds float64 `json:"seconds"`
	Checks  []Check `json:"checks"`
}

// SegmentTransition runs one phase transition of one segment: preflight
// (waiting for a fresh legacy-side sweep where needed), the phase change,
// and the wait for every gateway to program it.
type SegmentTransition struct {
	Client client.Client
	// Progress receives one line per change of state (stderr).
	Progress io.Writer
	// Timeout bounds the preflight wait and the phase wait each.
	Timeout  time.Duration
	Interval time.Duration
}

// Run moves ref one phase in direction (SegmentAdvance or SegmentRollback).
func (r *SegmentTransition) Run(ctx context.Context, ref SegmentRef, direction string) (SegmentResult, error) {
	res := SegmentResult{Segment: ref.String(), Checks: []Check{}}
	progress := r.Progress
	if progress == nil {
		progress = io.Discard
	}
	interval := r.Interval
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	start := time.Now()
	say := func(line string) { fmt.Fprintf(progress, "[%5.1fs] %s: %s\n", time.Since(start).Seconds(), ref, line) }
	fail := func(format string, args ...interface{}) (SegmentResult, error) {
		res.Seconds = time.Since(start).Seconds()
		res.Message = fmt.Sprintf(format, args...)
		say("FAILED: " + res.Message)
		return res, fmt.Errorf("%w: %s: %s", ErrSegmentFailed, ref, res.Message)
	}

	// Preflight: re-evaluated until decided (a sweep newer than this
	// command is awaited, so what answered is current), or the timeout.
	var plan SegmentPlan
	last := ""
	err := r.poll(ctx, interval, func(s *Snapshot) bool {
		plan = BuildSegmentPlan(s, ref, direction, start)
		res.From, res.To, res.Checks = plan.Phase, plan.Next, plan.Checks
		line := "preflight: " + checkSummary(plan)
		if line != last {
			last = line
			say(line)
		}
		return len(plan.Pending()) == 0
	})
	if err != nil {
		if errors.Is(err, errTimedOut) {
			return fail("preflight timed out after %s: %s", r.Timeout, checkSummary(plan))
		}
		return res, err
	}
	if !plan.Ready {
		return fail("preflight refused %s → %s: %s", plan.Phase, dash(string(plan.Next)), failedText(plan.Failed()))
	}

	if err := setSegmentPhase(ctx, r.Client, ref, plan.Phase, plan.Next); err != nil {
		return res, err
	}
	res.Changed = true
	say(fmt.Sprintf("phase %s → %s written", plan.Phase, plan.Next))

	var p Progress
	last = ""
	err = r.poll(ctx, interval, func(s *Snapshot) bool {
		p = EvaluateSegmentPhase(s, ref, plan.Next)
		line := p.Message
		if p.Done {
			line = "done: " + line
		}
		if line != last {
			last = line
			say(line)
		}
		return p.Done || p.Failed
	})
	res.Seconds = time.Since(start).Seconds()
	res.Done, res.Message = p.Done, p.Message
	if err != nil {
		if errors.Is(err, errTimedOut) {
			return fail("phase %s written, gateways not there after %s: %s", plan.Next, r.Timeout, p.Message)
		}
		return res, err
	}
	if p.Failed {
		return fail("%s", p.Message)
	}
	return res, nil
}

var errTimedOut = errors.New("timed out")

// poll collects a snapshot every interval until decide returns true, the
// timeout (errTimedOut) or ctx ends. As in Cutover.Run, the timeout is
// checked between polls, not carried by the API calls.
func (r *SegmentTransition) poll(ctx context.Context, interval time.Duration, decide func(*Snapshot) bool) error {
	var deadline time.Time
	if r.Timeout > 0 {
		deadline = time.Now().Add(r.Timeout)
	}
	for {
		pollCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		snap, err := Collect(pollCtx, r.Client)
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("segment transition interrupted: %w", ctx.Err())
		}
		if err != nil {
			return err
		}
		if decide(snap) {
			return nil
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return errTimedOut
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("segment transition interrupted: %w", ctx.Err())
		case <-time.After(interval):
		}
	}
}

// setSegmentPhase writes spec.segments[i].phase with a JSON patch whose
// test ops fail it when the segment moved or changed phase meanwhile
// (another operator): the preflight was for that phase.
func setSegmentPhase(ctx context.Context, c client.Client, ref SegmentRef, from, to nbv1.SegmentPhase) error {
	bc := &nbv1.BridgeConfig{}
	if err := c.Get(ctx, types.NamespacedName{Name: ref.BridgeConfig}, bc); err != nil {
		return fmt.Errorf("get bridgeconfig %s: %w", ref.BridgeConfig, err)
	}
	idx := -1
	for i, s := range bc.Spec.Segments {
		if s.Name == ref.Segment {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("bridgeconfig %s has no segment %s", ref.BridgeConfig, ref.Segment)
	}
	path := fmt.Sprintf("/spec/segments/%d", idx)
	ops := []map[string]interface{}{{"op": "test", "path": path + "/name", "value": ref.Segment}}
	if bc.Spec.Segments[idx].Phase != "" {
		ops = append(ops, map[string]interface{}{"op": "test", "path": path + "/phase", "value": string(from)})
	}
	ops = append(ops, map[string]interface{}{"op": "add", "path": path + "/phase", "value": string(to)})
	patch, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("phase patch: %w", err)
	}
	if err := c.Patch(ctx, bc, client.RawPatch(types.JSONPatchType, patch)); err != nil {
		return fmt.Errorf("set bridgeconfig %s segment %s phase %s → %s: %w", ref.BridgeConfig, ref.Segment, from, to, err)
	}
	return nil
}

func checkSummary(p SegmentPlan) string {
	if f := p.Failed(); len(f) > 0 {
		return "FAIL " + failedText(f)
	}
	if pe := p.Pending(); len(pe) > 0 {
		return "pending " + failedText(pe)
	}
	return "all checks passed"
}

func failedText(cs []Check) string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s: %s", c.Name, c.Message))
	}
	return strings.Join(out, "; ")
}
