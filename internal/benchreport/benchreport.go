// Package benchreport gives the benchmarks one line format for a sizing
// figure (ours, the limit measured in the same run, their ratio and the
// goal) and turns a `go test -bench` log into the summary table that
// `make bench` ends with, so a reader sees every number at once.
package benchreport

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Marker starts every figure line; the summary reads only those lines.
const Marker = "benchfigure"

// Direction says which way a ratio meets its goal.
type Direction string

const (
	// AtMost: ours/limit must not exceed the goal (times, writes).
	AtMost Direction = "<="
	// AtLeast: ours/limit must reach the goal (throughput).
	AtLeast Direction = ">="
)

// Figure is one sizing figure. Limit is what the same work costs without
// netbridge (a bare server, a hand-built path, the kernel's own floor),
// measured in the same run; Goal bounds Ours/Limit in Direction.
type Figure struct {
	Name  string
	Unit  string
	Ours  float64
	Limit float64
	Goal  float64
	Dir   Direction
	// Note says what the limit is, in a few words.
	Note string
}

// Ratio is Ours/Limit (0 when there is no limit).
func (f Figure) Ratio() float64 {
	if f.Limit == 0 {
		return 0
	}
	return f.Ours / f.Limit
}

// Met reports whether the ratio meets the goal.
func (f Figure) Met() bool {
	r := f.Ratio()
	if f.Dir == AtLeast {
		return r >= f.Goal
	}
	return r <= f.Goal
}

// Logger is what a benchmark has: testing.B satisfies it.
type Logger interface {
	Helper()
	Logf(format string, args ...any)
	ReportMetric(n float64, unit string)
}

// Report prints the figure's line and reports ours, limit and ratio as
// benchmark metrics under the figure's name.
func Report(b Logger, f Figure) {
	b.Helper()
	b.ReportMetric(f.Ours, f.Name+"_"+f.Unit)
	b.ReportMetric(f.Limit, f.Name+"_limit_"+f.Unit)
	b.ReportMetric(f.Ratio(), f.Name+"_ratio")
	b.Logf("%s", Line(f))
}

// Line is the figure's stable one-line form.
func Line(f Figure) string {
	return fmt.Sprintf("%s name=%s unit=%s ours=%s limit=%s ratio=%.3f goal=%s%s met=%t note=%q",
		Marker, f.Name, f.Unit, num(f.Ours), num(f.Limit), f.Ratio(), f.Dir, num(f.Goal), f.Met(), f.Note)
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// Parse reads figure lines out of a benchmark log (other lines are
// skipped); a later figure of the same name replaces an earlier one.
func Parse(r io.Reader) ([]Figure, error) {
	var out []Figure
	index := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, Marker+" ")
		if i < 0 {
			continue
		}
		f, err := parseLine(line[i+len(Marker)+1:])
		if err != nil {
			return nil, fmt.Errorf("benchmark log line %q: %w", line, err)
		}
		if j, ok := index[f.Name]; ok {
			out[j] = f
			continue
		}
		index[f.Name] = len(out)
		out = append(out, f)
	}
	return out, sc.Err()
}

func parseLine(s string) (Figure, error) {
	var f Figure
	note := ""
	if i := strings.Index(s, " note="); i >= 0 {
		q, err := strconv.Unquote(s[i+len(" note="):])
		if err != nil {
			return f, fmt.Errorf("note: %w", err)
		}
		note, s = q, s[:i]
	}
	f.Note = note
	for _, kv := range strings.Fields(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return f, fmt.Errorf("field %q: want key=value", kv)
		}
		var err error
		switch k {
		case "name":
			f.Name = v
		case "unit":
			f.Unit = v
		case "ours":
			f.Ours, err = strconv.ParseFloat(v, 64)
		case "limit":
			f.Limit, err = strconv.ParseFloat(v, 64)
		case "goal":
			switch {
			case strings.HasPrefix(v, string(AtLeast)):
				f.Dir = AtLeast
			case strings.HasPrefix(v, string(AtMost)):
				f.Dir = AtMost
			default:
				return f, fmt.Errorf("goal %q: want <=N or >=N", v)
			}
			f.Goal, err = strconv.ParseFloat(v[len(f.Dir):], 64)
		}
		if err != nil {
			return f, fmt.Errorf("%s=%q: %w", k, v, err)
		}
	}
	if f.Name == "" {
		return f, fmt.Errorf("no name")
	}
	return f, nil
}

// Table writes the summary: one row per figure, in log order.
func Table(w io.Writer, figs []Figure) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tUNIT\tOURS\tLIMIT\tRATIO\tGOAL\tMET\tLIMIT IS")
	for _, f := range figs {
		met := "yes"
		if !f.Met() {
			met = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%s%s\t%s\t%s\n", f.Name, f.Unit, num(f.Ours), num(f.Limit), f.Ratio(), f.Dir, num(f.Goal), met, f.Note)
	}
	return tw.Flush()
}
