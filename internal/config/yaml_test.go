package config

import (
	"reflect"
	"strings"
	"testing"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

type yamlDoc struct {
	Name string                `json:"name"`
	Spec nbv1.BridgeConfigSpec `json:"spec"`
}

// TestDecodeYAMLErrors: a YAML user gets the line, the field path and the
// nearest known name, never "error unmarshaling JSON".
func TestDecodeYAMLErrors(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown field with suggestion", `name: lab
spec:
  uplink: {interface: eth1}
  segments:
  - name: app
    vni: 10100
    subnet: [10.0.0.0/24]
`, []string{`line 7: spec.segments[0].subnet: unknown field "subnet" (did you mean "subnets"?)`}},
		{"case slip", "spec:\n  segments:\n  - {name: a, vlanId: 3}\n",
			[]string{`line 3: spec.segments[0].vlanId: unknown field "vlanId" (did you mean "vlanID"?)`}},
		{"no suggestion when nothing is close", "spec:\n  colour: blue\n",
			[]string{`line 2: spec.colour: unknown field "colour"`}},
		{"a number that is text", "spec:\n  segments:\n  - name: a\n    vlanID: ten\n",
			[]string{`line 4: spec.segments[0].vlanID: want a whole number, got "ten"`}},
		{"a list where a mapping goes", "spec:\n  uplink: [eth1]\n",
			[]string{`line 2: spec.uplink: want a mapping (key: value lines), got a list`}},
		{"a scalar where a list goes", "spec:\n  segments:\n  - {name: a, subnets: 10.0.0.0/24}\n",
			[]string{`line 3: spec.segments[0].subnets: want a list (lines starting with "- "), got "10.0.0.0/24"`}},
		{"several problems, in order", "spec:\n  segments:\n  - {name: a, vnii: 1}\n  bpg: {}\n",
			[]string{`line 3: spec.segments[0].vnii: unknown field "vnii" (did you mean "vni"?)`, `line 4: spec.bpg: unknown field "bpg" (did you mean "bgp"?)`}},
		{"a bool that is not", "spec:\n  segments:\n  - {name: a, access: yes please}\n",
			[]string{`line 3: spec.segments[0].access: want true or false, got "yes please"`}},
		{"a YAML syntax error has its line", "spec:\n  segments: [\n", []string{"line"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d yamlDoc
			err := DecodeYAML([]byte(c.doc), &d)
			if err == nil {
				t.Fatalf("accepted:\n%s", c.doc)
			}
			msg := err.Error()
			if strings.Contains(msg, "JSON") {
				t.Errorf("speaks JSON to a YAML user: %s", msg)
			}
			lines := strings.Split(msg, "\n")
			for i, w := range c.want {
				if i >= len(lines) || !strings.Contains(lines[i], w) {
					t.Errorf("error line %d: got\n%s\nwant it to hold %q", i, msg, w)
				}
			}
			if len(c.want) > 1 && len(lines) != len(c.want) {
				t.Errorf("got %d problems, want %d: %s", len(lines), len(c.want), msg)
			}
		})
	}
}

func TestDecodeYAMLValid(t *testing.T) {
	doc := `name: lab
spec:
  uplink: {interface: eth1}
  segments:
  - name: app
    vlanID: 100
    vni: 10100
    subnets: ["10.0.0.0/24"]
    communities: ["65000:100"]
    namespaceSelector: {matchLabels: {a: b}}
  bgp:
    localASN: 65010
    peers:
    - {address: 192.0.2.1, asn: 65000, holdTime: 9, passwordSecretRef: {name: dc1}}
`
	var d yamlDoc
	if err := DecodeYAML([]byte(doc), &d); err != nil {
		t.Fatal(err)
	}
	s := d.Spec.Segments[0]
	if d.Name != "lab" || s.VLANID != 100 || s.Subnets[0] != "10.0.0.0/24" || s.NamespaceSelector.MatchLabels["a"] != "b" ||
		*d.Spec.BGP.Peers[0].HoldTime != 9 || d.Spec.BGP.Peers[0].PasswordSecretRef.Name != "dc1" {
		t.Errorf("decoded %+v", d)
	}
}

func TestNearest(t *testing.T) {
	known := jsonFields(reflectTypeOfSegment())
	for in, want := range map[string]string{"subnet": "subnets", "vlan": "vlanID", "bpg": "", "mtuu": "mtu", "gatewayaddress": "gatewayAddress", "xyz": ""} {
		if got := nearest(in, known); got != want {
			t.Errorf("nearest(%q) = %q, want %q", in, got, want)
		}
	}
}

func reflectTypeOfSegment() reflect.Type { return reflect.TypeFor[nbv1.Segment]() }
