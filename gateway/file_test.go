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
