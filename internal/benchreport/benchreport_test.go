package benchreport

import (
	"strings"
	"testing"
)

func TestLineRoundTrip(t *testing.T) {
	figs := []Figure{
		{Name: "bgp_add_10k", Unit: "s", Ours: 1.234, Limit: 1.1, Goal: 1.05, Dir: AtMost, Note: "bare GoBGP, same FRR"},
		{Name: "tcp_to_vm", Unit: "gbps", Ours: 9.3, Limit: 10, Goal: 0.95, Dir: AtLeast, Note: `hand-built "ip" path`},
	}
	var log strings.Builder
	log.WriteString("goos: linux\nBenchmarkX-2 1 123 ns/op\n")
	for _, f := range figs {
		log.WriteString("    bench_test.go:12: " + Line(f) + "\n")
	}
	got, err := Parse(strings.NewReader(log.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(figs) {
		t.Fatalf("parsed %d figures, want %d: %+v", len(got), len(figs), got)
	}
	for i := range figs {
		if got[i] != figs[i] {
			t.Errorf("figure %d: got %+v, want %+v", i, got[i], figs[i])
		}
	}
	if got[0].Met() {
		t.Errorf("%s: ratio %.3f > goal 1.05 reported as met", got[0].Name, got[0].Ratio())
	}
	if got[1].Met() {
		t.Errorf("%s: ratio %.3f < goal 0.95 reported as met", got[1].Name, got[1].Ratio())
	}
}

func TestParseLaterReplacesEarlier(t *testing.T) {
	a := Figure{Name: "x", Unit: "s", Ours: 2, Limit: 1, Goal: 1.1, Dir: AtMost}
	b := a
	b.Ours = 1
	got, err := Parse(strings.NewReader(Line(a) + "\n" + Line(b) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Ours != 1 {
		t.Fatalf("got %+v, want the later figure only", got)
	}
}

func TestParseNamesTheBadField(t *testing.T) {
	_, err := Parse(strings.NewReader(Marker + " name=x ours=fast limit=1 goal=<=1\n"))
	if err == nil || !strings.Contains(err.Error(), `ours="fast"`) {
		t.Fatalf("err = %v, want it to name ours=\"fast\"", err)
	}
	_, err = Parse(strings.NewReader(Marker + " name=x ours=1 limit=1 goal=1\n"))
	if err == nil || !strings.Contains(err.Error(), `goal "1"`) {
		t.Fatalf("err = %v, want it to name the goal", err)
	}
}

func TestTable(t *testing.T) {
	var out strings.Builder
	err := Table(&out, []Figure{
		{Name: "trunk_remove", Unit: "s", Ours: 20, Limit: 10, Goal: 1, Dir: AtMost, Note: "issue goal 10 s"},
		{Name: "tcp_to_vm", Unit: "gbps", Ours: 9.6, Limit: 10, Goal: 0.95, Dir: AtLeast},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out.String())
	}
	if !strings.Contains(lines[1], "trunk_remove") || !strings.Contains(lines[1], "2.000") || !strings.Contains(lines[1], "NO") {
		t.Errorf("row 1 %q: want trunk_remove, ratio 2.000, NO", lines[1])
	}
	if !strings.Contains(lines[2], "0.960") || !strings.Contains(lines[2], "yes") || !strings.Contains(lines[2], ">=0.95") {
		t.Errorf("row 2 %q: want ratio 0.960, >=0.95, yes", lines[2])
	}
}
