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

// TestLogEventsDocumented: every `event` value the gateway logs has its
// row in docs/operations.md, and every row there is logged somewhere.
func TestLogEventsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(doc), "### Gateway log events")
	if i < 0 {
		t.Fatal("docs/operations.md has no gateway log events table")
	}
	section := string(doc[i:])
	if j := strings.Index(section[3:], "\n#"); j >= 0 {
		section = section[:j+3]
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\|").FindAllStringSubmatch(section, -1) {
		documented[m[1]] = true
	}
	logged := map[string]bool{}
	// zap.String("event", "x"), or an event name chosen into a variable
	// first (ev := "x"; ev = "y") and logged with zap.String("event", ev).
	re := regexp.MustCompile(`(?:zap\.String\("event", |\bev :?= )"([A-Za-z]+)"`)
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			logged[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) < 20 {
		t.Fatalf("only %d events found in the sources", len(logged))
	}
	for e := range logged {
		if !documented[e] {
			t.Errorf("event %q is logged but not documented in docs/operations.md", e)
		}
	}
	for e := range documented {
		if !logged[e] {
			t.Errorf("event %q is documented but never logged", e)
		}
	}
}
