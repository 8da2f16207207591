package gateway

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

const fileBase = `name: lab
spec:
  uplink: {interface: eth1}
  segments:
  - name: app
    access: true
    vlanID: 100
    vni: 10100
    subnets: ["10.20.100.0/24"]
    mtu: 1500
  bgp:
    localASN: 65010
    peers:
    - {address: 192.0.2.1, asn: 65000, passwordSecretRef: {name: tor}}
endpoints:
- name: vm1
  segment: app
  ips: ["10.20.100.50", "nope"]
passwordFiles:
  tor: PWFILE
`

// TestFileErrorsSpeakYAML: every error of the file names its line and the
// field path as written in the file, never JSON.
func TestFileErrorsSpeakYAML(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "tor.password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(fileBase, "PWFILE", pw, 1)
	for name, tc := range map[string]struct{ from, to, want string }{
		"typo":          {"    subnets:", "    subnet:", `line 9: spec.segments[0].subnet: unknown field "subnet" (did you mean "subnets"?)`},
		"semantic":      {"vni: 10100", "vni: 0", `line 8: spec.segments[0].vni: Invalid value: 0: must be between 1 and 16777215`},
		"access vlanID": {"vlanID: 100", "vlanID: 0", `line 7: spec.segments[0].vlanID: Invalid value: 0: must be between 1 and 4094: on an access segment`},
		"endpoint":      {"", "", `line 18: endpoints[0].ips[1]: Invalid value: "nope": not an IP address`},
		"password file": {pw, pw + ".missing", `passwordFiles.tor: open ` + pw + `.missing: no such file`},
	} {
		t.Run(name, func(t *testing.T) {
			raw := base // holds one bad endpoint IP, for the "endpoint" case
			if name != "endpoint" {
				raw = strings.Replace(raw, `, "nope"`, "", 1)
				raw = strings.Replace(raw, tc.from, tc.to, 1)
			}
			_, err := parseFileConfig([]byte(raw))
			if err == nil {
				t.Fatalf("accepted:\n%s", raw)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "JSON") {
				t.Fatalf("got  %v\nwant %s", err, tc.want)
			}
		})
	}
	// The valid file: the password comes from the file, without its newline.
	fc, err := parseFileConfig([]byte(strings.Replace(base, `, "nope"`, "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	src := &FileSource{cfg: fc}
	in, err := src.Inputs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := in.Password(nbv1.SecretKeyRef{Name: "tor"}); err != nil || got != "s3cret" {
		t.Fatalf("password %q, %v", got, err)
	}
}

// TestDocErrorExamples: the error messages docs/standalone.md shows are
// the ones the example file gives with those mistakes made.
func TestDocErrorExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "standalone.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := func(name string) string {
		_, after, ok := strings.Cut(string(doc), "<!-- test: "+name+" -->\n```")
		if !ok {
			t.Fatalf("no block %s", name)
		}
		_, body, _ := strings.Cut(after, "\n")
		body, _, _ = strings.Cut(body, "\n```")
		return body + "\n"
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tor.password"), []byte(block("tor.password")), 0o600); err != nil {
		t.Fatal(err)
	}
	example := strings.ReplaceAll(block("bridge.yaml"), "/etc/netbridge/", dir+"/")
	if _, err := parseFileConfig([]byte(example)); err != nil {
		t.Fatalf("the documented file is refused: %v", err)
	}
	mistakes := [][2]string{
		{`    subnets: ["10.20.100.0/24"`, `    subnet: ["10.20.100.0/24"`},
		{"vni: 10100", "vni: 0"},
		{`ips: ["10.20.100.50", `, `ips: ["10.20.100.5O", `},
	}
	want := strings.Split(strings.TrimSpace(block("errors")), "\n")
	if len(want) != len(mistakes) {
		t.Fatalf("the doc shows %d errors, the test makes %d mistakes", len(want), len(mistakes))
	}
	for i, m := range mistakes {
		if !strings.Contains(example, m[0]) {
			t.Fatalf("the example has no %q", m[0])
		}
		_, err := parseFileConfig([]byte(strings.Replace(example, m[0], m[1], 1)))
		if err == nil {
			t.Fatalf("mistake %q accepted", m[1])
		}
		if got := "bridge.yaml: " + err.Error(); got != want[i] {
			t.Errorf("mistake %q:\n got  %s\n doc  %s", m[1], got, want[i])
		}
	}
}
