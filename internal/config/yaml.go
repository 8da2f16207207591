package config

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// DecodeYAML decodes a YAML document into out (a pointer to a struct with
// json tags, as the API types have) and reports mistakes the way a YAML
// user reads them: the line, the field path and, for an unknown field, the
// nearest known name, e.g.
//
//	line 7: spec.segments[0].subnet: unknown field "subnet" (did you mean "subnets"?)
//
// instead of the JSON decoder's "error unmarshaling JSON". Every problem of
// the document is listed, one per line, in document order.
func DecodeYAML(raw []byte, out any) error {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	t := reflect.TypeOf(out)
	if t.Kind() != reflect.Pointer {
		return fmt.Errorf("DecodeYAML: out must be a pointer, not %s", t)
	}
	if len(doc.Content) > 0 {
		var c yamlChecker
		c.check(doc.Content[0], t.Elem(), "")
		if len(c.errs) > 0 {
			return errors.Join(c.errs...)
		}
	}
	// The fields and scalar kinds are known good: the one remaining step
	// is the API types' own decoding (json tags, custom unmarshalers).
	if err := yaml.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// yamlChecker walks a YAML node tree beside the Go type it decodes into.
type yamlChecker struct{ errs []error }

func (c *yamlChecker) fail(n *yamlv3.Node, path, format string, args ...any) {
	where := path
	if where == "" {
		where = "(document)"
	}
	c.errs = append(c.errs, fmt.Errorf("line %d: %s: %s", n.Line, where, fmt.Sprintf(format, args...)))
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (c *yamlChecker) check(n *yamlv3.Node, t reflect.Type, path string) {
	if n.Kind == yamlv3.AliasNode {
		n = n.Alias
	}
	if n.Kind == yamlv3.ScalarNode && n.Tag == "!!null" {
		return // null is every type's zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// Types with their own decoding (times, quantities) check themselves.
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yamlv3.MappingNode {
			c.fail(n, path, "want a mapping (key: value lines), got %s", describe(n))
			return
		}
		fields := jsonFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			p := join(path, k.Value)
			if !ok {
				msg := fmt.Sprintf("unknown field %q", k.Value)
				if s := nearest(k.Value, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				c.fail(k, p, "%s", msg)
				continue
			}
			c.check(v, ft, p)
		}
	case reflect.Map:
		if n.Kind != yamlv3.MappingNode {
			c.fail(n, path, "want a mapping (key: value lines), got %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.check(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yamlv3.SequenceNode {
			c.fail(n, path, "want a list (lines starting with \"- \"), got %s", describe(n))
			return
		}
		for i, e := range n.Content {
			c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Bool:
		if n.Kind != yamlv3.ScalarNode || n.Tag != "!!bool" {
			c.fail(n, path, "want true or false, got %s", describe(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yamlv3.ScalarNode || n.Tag != "!!int" {
			c.fail(n, path, "want a whole number, got %s", describe(n))
			return
		}
		if _, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, t.Bits()); err != nil {
			c.fail(n, path, "%s does not fit a %d-bit number", n.Value, t.Bits())
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yamlv3.ScalarNode || n.Tag != "!!int" || strings.HasPrefix(n.Value, "-") {
			c.fail(n, path, "want a whole number 0 or above, got %s", describe(n))
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yamlv3.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			c.fail(n, path, "want a number, got %s", describe(n))
		}
	case reflect.String:
		if n.Kind != yamlv3.ScalarNode {
			c.fail(n, path, "want a single value, got %s", describe(n))
		}
	}
}

// describe names what a node is, for "want X, got Y".
func describe(n *yamlv3.Node) string {
	switch n.Kind {
	case yamlv3.MappingNode:
		return "a mapping"
	case yamlv3.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonFields are a struct's fields by JSON name, inlined (embedded or
// `json:",inline"`) structs flattened into it, as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" && opts == "" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) && ft.Kind() == reflect.Struct {
			for k, v := range jsonFields(ft) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// nearest is the known name closest to s (case-insensitive edit distance),
// if it is close enough to be the likely intent: at most a third of the
// longer name's letters differ.
func nearest(s string, known map[string]reflect.Type) string {
	best, bestD := "", -1
	for k := range known {
		d := editDistance(strings.ToLower(s), strings.ToLower(k))
		if bestD < 0 || d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if bestD < 0 || bestD*3 > max(len(s), len(best)) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of two neighbours ("bpg"
// for "bgp") cost one each.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// YAMLLines maps each field path of a YAML document ("spec.segments[0].mtu",
// the spelling of field.Path) to its line, so that the semantic checks'
// errors can point at the line too. A document that does not parse maps
// nothing.
func YAMLLines(raw []byte) map[string]int {
	var doc yamlv3.Node
	out := map[string]int{}
	if yamlv3.Unmarshal(raw, &doc) != nil || len(doc.Content) == 0 {
		return out
	}
	var walk func(n *yamlv3.Node, path string)
	walk = func(n *yamlv3.Node, path string) {
		switch n.Kind {
		case yamlv3.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := join(path, n.Content[i].Value)
				out[p] = n.Content[i].Line
				walk(n.Content[i+1], p)
			}
		case yamlv3.SequenceNode:
			for i, e := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				out[p] = e.Line
				walk(e, p)
			}
		}
	}
	walk(doc.Content[0], "")
	return out
}
