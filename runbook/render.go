package runbook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Output formats.
const (
	OutputTable = "table"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// Render writes a report (StatusReport, Plan, VerifyReport, []Progress) in
// the format asked for.
func Render(w io.Writer, format string, report interface{}) error {
	switch format {
	case OutputJSON:
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case OutputYAML:
		b, err := yaml.Marshal(report)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(b)
		return err
	case OutputTable, "":
		var buf bytes.Buffer
		tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
		switch r := report.(type) {
		case StatusReport:
			writeStatus(tw, r)
		case Plan:
			writePlan(tw, r)
		case WavePlan:
			writeWave(tw, r.Wave)
			writePlan(tw, r.Plan)
		case VerifyReport:
			writeVerify(tw, r)
		case []Progress:
			writeProgress(tw, r)
		case SegmentPlan:
			writeSegmentPlan(tw, r)
		case SegmentResult:
			writeSegmentResult(tw, r)
		default:
			return fmt.Errorf("no table layout for %T", report)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		// Empty last columns leave tabwriter padding at line ends.
		for _, line := range strings.SplitAfter(buf.String(), "\n") {
			trimmed := strings.TrimRight(line, " \n")
			if line == "" {
				continue
			}
			if _, err := io.WriteString(w, trimmed+"\n"); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("output format %q: want table, json or yaml", format)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func writeStatus(w io.Writer, r StatusReport) {
	fmt.Fprintln(w, "SEGMENT\tVLAN\tVNI\tPHASE\tACTIVE\tSTANDBY\tSTAGED/ACTIVE/WITHDRAWN/REFUSED")
	for _, s := range r.Segments {
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t%d/%d/%d/%d\n", s.Segment, s.VLAN, s.VNI, s.Phase,
			dash(s.ActiveGateway), list(s.StandbyGateways),
			s.Endpoints.Staged, s.Endpoints.Active, s.Endpoints.Withdrawn, s.Endpoints.Refused)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "GATEWAY\tREADY\tSEGMENTS\tPEER\tASN\tSTATE\tBFD\tSENT\tADVERTISED")
	for _, g := range r.Gateways {
		adv := fmt.Sprintf("%d", len(g.Advertised))
		if len(g.Advertised) > 0 && len(g.Advertised) <= 4 {
			adv = strings.Join(g.Advertised, ",")
		}
		if len(g.Peers) == 0 {
			fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\t-\t-\t-\t%s\n", g.Name, g.Ready, list(g.Segments), adv)
			continue
		}
		for i, p := range g.Peers {
			name, ready, segs, a := g.Name, g.Ready, list(g.Segments), adv
			if i > 0 {
				// One row per BGP session; the gateway's columns once.
				name, ready, segs, a = "", "", "", ""
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", name, ready, segs, p.Address, p.ASN, p.State, dash(p.BFD), p.PrefixesSent, a)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "NAMESPACE\tVM\tENDPOINT\tSEGMENT\tIPS\tNODE\tSTATE\tADVERTISED\tREASON")
	for _, e := range r.Endpoints {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Namespace, dash(e.VM), e.Name, e.Segment,
			list(e.IPs), dash(e.Node), e.State, e.Advertised, dash(e.Reason))
	}
}

func writePlan(w io.Writer, p Plan) {
	fmt.Fprintln(w, "VM\tSEGMENT\tSTATE\tPREFIXES\tGATEWAY\tACTION")
	for _, it := range p.Items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", it.VM, dash(it.Segment), it.State, list(it.Prefixes), dash(it.Gateway), it.Action)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CHECK\tSUBJECT\tRESULT\tDETAIL")
	for _, c := range p.Checks {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, c.Subject, c.Result, c.Message)
	}
	fmt.Fprintln(w)
	if p.Ready {
		fmt.Fprintln(w, "preflight: all checks passed")
	} else {
		fmt.Fprintf(w, "preflight: %d check(s) FAILED\n", len(p.Failed()))
	}
}

func writeVerify(w io.Writer, r VerifyReport) {
	fmt.Fprintln(w, "VM\tENDPOINT\tSEGMENT\tIPS\tGATEWAY\tROUTE\tFDB\tARP\tRESULT")
	for _, row := range r.Rows {
		result := "ok"
		if !row.OK {
			result = "FAIL: " + strings.Join(row.Problems, "; ")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.VM, dash(row.Endpoint), dash(row.Segment),
			list(row.IPs), dash(row.Gateway), row.Route, row.FDB, row.ARP, result)
	}
	if len(r.Rows) == 0 {
		fmt.Fprintln(w, "no active endpoints to verify")
	}
}

func writeProgress(w io.Writer, ps []Progress) {
	fmt.Fprintln(w, "VM\tRESULT\tDETAIL")
	for _, p := range ps {
		result := "pending"
		switch {
		case p.Done:
			result = "done"
		case p.Failed:
			result = "FAILED"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", p.VM, result, p.Message)
	}
}

func writeChecks(w io.Writer, checks []Check) {
	fmt.Fprintln(w, "CHECK\tSUBJECT\tRESULT\tDETAIL")
	for _, c := range checks {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, c.Subject, c.Result, c.Message)
	}
}

func writeSegmentPlan(w io.Writer, p SegmentPlan) {
	fmt.Fprintf(w, "SEGMENT\tPHASE\tNEXT\tGATEWAY\n%s\t%s\t%s\t%s\n\n", p.Segment, dash(string(p.Phase)), dash(string(p.Next)), dash(p.Gateway))
	for i, s := range p.Steps {
		fmt.Fprintf(w, "step %d: %s\n", i+1, s)
	}
	fmt.Fprintln(w)
	writeChecks(w, p.Checks)
	fmt.Fprintln(w)
	switch {
	case len(p.Failed()) > 0:
		fmt.Fprintf(w, "preflight: %d check(s) FAILED\n", len(p.Failed()))
	case len(p.Pending()) > 0:
		fmt.Fprintf(w, "preflight: %d check(s) pending\n", len(p.Pending()))
	default:
		fmt.Fprintln(w, "preflight: all checks passed")
	}
}

func writeSegmentResult(w io.Writer, r SegmentResult) {
	result := "done"
	if !r.Done {
		result = "FAILED"
	}
	fmt.Fprintln(w, "SEGMENT\tFROM\tTO\tCHANGED\tRESULT\tSECONDS\tDETAIL")
	fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%s\t%.1f\t%s\n", r.Segment, dash(string(r.From)), dash(string(r.To)), r.Changed, result, r.Seconds, r.Message)
	fmt.Fprintln(w)
	writeChecks(w, r.Checks)
}

func writeWave(w io.Writer, wave Wave) {
	fmt.Fprintf(w, "WAVE %s (uid %s): %d VM(s), %d not migrated\n", wave.Plan, wave.UID, len(wave.VMs), len(wave.NotMigrated()))
	fmt.Fprintln(w, "PLAN VM\tID\tVMI\tMIGRATED")
	for _, v := range wave.VMs {
		name := v.Name
		if v.Namespace != "" {
			name = v.Namespace + "/" + name
		}
		migrated := "yes"
		if !v.Migrated {
			migrated = "no"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", dash(name), dash(v.ID), list(v.VMIs), migrated)
	}
	fmt.Fprintln(w)
}
