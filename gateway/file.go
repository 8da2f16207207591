package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/config"
)

// FileConfig is the standalone configuration of an edge host with no
// cluster: one BridgeConfig's spec, the endpoints, and the BGP passwords.
// After parsing it goes through the same translation as the API objects.
type FileConfig struct {
	// Name plays the BridgeConfig's name (segment keys are Name.segment).
	Name string `json:"name"`
	// Spec is exactly a BridgeConfig spec; gatewaySelector is ignored.
	Spec nbv1.BridgeConfigSpec `json:"spec"`
	// Endpoints are the VM interfaces, as BridgeEndpoint specs.
	Endpoints []FileEndpoint `json:"endpoints,omitempty"`
	// Passwords holds TCP MD5 passwords by Secret name (the peers'
	// passwordSecretRef.name), since there are no Secrets here.
	Passwords map[string]string `json:"passwords,omitempty"`
	// PasswordFiles names, by Secret name, a file holding the password
	// (one line; a trailing newline is not part of it), so the
	// configuration file itself can be world-readable. Read at every
	// (re)load; a name in both maps is refused.
	PasswordFiles map[string]string `json:"passwordFiles,omitempty"`
	// ActiveGatewayVTEP is where node-role hosts flood broadcast traffic
	// (there is no lease to tell them).
	ActiveGatewayVTEP string `json:"activeGatewayVTEP,omitempty"`
}

// FileEndpoint is one endpoint in a FileConfig.
type FileEndpoint struct {
	Name                    string `json:"name"`
	Namespace               string `json:"namespace,omitempty"`
	nbv1.BridgeEndpointSpec `json:",inline"`
}

// parseFileConfig parses and checks a standalone configuration.
func parseFileConfig(raw []byte) (*FileConfig, error) {
	var fc FileConfig
	// Errors name the line and the field path, with the nearest known
	// field for a typo.
	if err := config.DecodeYAML(raw, &fc); err != nil {
		return nil, err
	}
	if fc.Name == "" {
		fc.Name = "local"
	}
	if fc.ActiveGatewayVTEP != "" {
		if _, err := netip.ParseAddr(fc.ActiveGatewayVTEP); err != nil {
			return nil, fmt.Errorf("activeGatewayVTEP: %q is not an IP address", fc.ActiveGatewayVTEP)
		}
	}
	if len(fc.Spec.Segments) == 0 {
		// An empty or truncated file (caught mid-write) must not tear
		// down every segment: removing all of them is done by stopping
		// the agent, not by an empty configuration.
		return nil, fmt.Errorf("spec.segments: empty; refusing a configuration without segments")
	}
	// The one validation path: every field is checked as the API server
	// and the controller check it, and the errors name field and value.
	lines := config.YAMLLines(raw)
	if _, errs := config.Parse(fc.Name, fc.Spec); len(errs) > 0 {
		return nil, withLines(errs, lines, "")
	}
	if err := fc.readPasswordFiles(); err != nil {
		return nil, err
	}
	for i := range fc.Endpoints {
		e := &fc.Endpoints[i]
		if e.Name == "" {
			return nil, fmt.Errorf("endpoints[%d].name: empty", i)
		}
		if e.Namespace == "" {
			e.Namespace = "default"
		}
		if e.BridgeConfig == "" {
			e.BridgeConfig = fc.Name
		}
		if e.State == "" {
			e.State = nbv1.StateActive
		}
		if _, errs := config.ParseEndpoint(e.Namespace, e.Name, e.BridgeEndpointSpec); len(errs) > 0 {
			return nil, fmt.Errorf("endpoint %s: %w", e.Name, withLines(errs, lines, fmt.Sprintf("endpoints[%d]", i)))
		}
	}
	return &fc, nil
}

// withLines renders validation errors the way the file reads: each one
// with the line of its field, and the endpoint specs' "spec." paths as
// where they are in the file (endpoints[i]., when specAt is set).
func withLines(errs field.ErrorList, lines map[string]int, specAt string) error {
	var out []error
	for _, e := range errs {
		e := *e
		if specAt != "" {
			e.Field = specAt + strings.TrimPrefix(e.Field, "spec")
		}
		// The nearest enclosing field that is in the file (a missing
		// field's parent).
		for p := e.Field; p != ""; p = parentPath(p) {
			if l, ok := lines[p]; ok {
				out = append(out, fmt.Errorf("line %d: %s", l, e.Error()))
				break
			}
			if parentPath(p) == "" {
				out = append(out, &e)
			}
		}
	}
	return errors.Join(out...)
}

// parentPath is "a.b" for "a.b.c" and "a.b[0]"; "" at the top.
func parentPath(p string) string {
	if i := strings.LastIndexAny(p, ".["); i > 0 {
		return p[:i]
	}
	return ""
}

// readPasswordFiles moves the passwords of PasswordFiles into Passwords.
func (fc *FileConfig) readPasswordFiles() error {
	for name, path := range fc.PasswordFiles {
		if _, dup := fc.Passwords[name]; dup {
			return fmt.Errorf("passwordFiles.%s: also in passwords: set it once", name)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("passwordFiles.%s: %w", name, err)
		}
		pw := strings.TrimRight(string(raw), "\r\n")
		if pw == "" {
			return fmt.Errorf("passwordFiles.%s: %s is empty", name, path)
		}
		if fc.Passwords == nil {
			fc.Passwords = map[string]string{}
		}
		fc.Passwords[name] = pw
	}
	return nil
}

// FileSource serves Inputs from a FileConfig; Load replaces it (reload on
// SIGHUP or a file change).
type FileSource struct {
	path string
	mu   sync.Mutex
	cfg  *FileConfig
}

// NewFileSource loads path once; it fails when the file is invalid.
func NewFileSource(path string) (*FileSource, error) {
	f := &FileSource{path: path}
	if err := f.Load(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the watched file.
func (f *FileSource) Path() string { return f.path }

// Load re-reads the file. An invalid file is refused and the previous
// configuration stays in force: a typo must not tear down what works.
func (f *FileSource) Load() error {
	raw, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("read %s: %w", f.path, err)
	}
	cfg, err := parseFileConfig(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	f.mu.Lock()
	f.cfg = cfg
	f.mu.Unlock()
	return nil
}

// Inputs implements Source.
func (f *FileSource) Inputs(context.Context) (Inputs, error) {
	f.mu.Lock()
	cfg := f.cfg
	f.mu.Unlock()
	bc := nbv1.BridgeConfig{ObjectMeta: metav1.ObjectMeta{Name: cfg.Name}, Spec: cfg.Spec}
	// Standalone: this host is the gateway of every segment.
	bc.Spec.GatewaySelector = metav1.LabelSelector{}
	in := Inputs{Configs: []nbv1.BridgeConfig{bc}}
	if v, err := netip.ParseAddr(cfg.ActiveGatewayVTEP); err == nil {
		const gw = "standalone-gateway"
		in.Nodes = map[string]NodeInfo{gw: {VTEP: v}}
		in.LeaseHolders = map[SegmentKey]string{}
		for _, s := range cfg.Spec.Segments {
			in.LeaseHolders[SegmentKey{BridgeConfig: cfg.Name, Segment: s.Name}] = gw
		}
	}
	for _, e := range cfg.Endpoints {
		in.Endpoints = append(in.Endpoints, nbv1.BridgeEndpoint{ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace}, Spec: e.BridgeEndpointSpec})
	}
	in.Password = func(ref nbv1.SecretKeyRef) (string, error) {
		pw, ok := cfg.Passwords[ref.Name]
		if !ok {
			return "", fmt.Errorf("passwords.%s: not in the config file", ref.Name)
		}
		return pw, nil
	}
	return in, nil
}
