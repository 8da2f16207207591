package gateway

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsDocumented: every metric the agent registers has its row in
// docs/operations.md (the names are a contract with dashboards and alerts).
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range []prometheus.Collector{reg} {
			c.Describe(ch)
		}
		close(ch)
	}()
	name := regexp.MustCompile(`fqName: "([^"]+)"`)
	n := 0
	for d := range ch {
		m := name.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		n++
		if !strings.Contains(string(doc), "| `"+m[1]+"` |") {
			t.Errorf("metric %s is not documented in docs/operations.md", m[1])
		}
	}
	if n < 9 {
		t.Fatalf("only %d metrics registered", n)
	}
}
