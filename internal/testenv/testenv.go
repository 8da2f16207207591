// Package testenv starts a real kube-apiserver + etcd for tests (controller,
// gateway, deploy, e2e) through controller-runtime's envtest, with the
// binaries that hack/testenv.sh builds from Go modules and caches.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Env is a running API server with netbridge's CRDs installed.
type Env struct {
	Config *rest.Config
	Client client.Client
	Scheme *k8sruntime.Scheme
	// Kubeconfig is the path of a kubeconfig file for processes started by
	// the test (gateway, controller, netbridgectl), admin credentials.
	Kubeconfig string

	env *envtest.Environment

	apiMu sync.Mutex
	api   *APIServer // once APIServer was called
}

// Options tune Start.
type Options struct {
	// ExtraCRDPaths are more CRD files or folders to install (e.g. the
	// test-only KubeVirt VMI CRD).
	ExtraCRDPaths []string
}

// RepoRoot is the module root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Assets returns the folder with kube-apiserver and etcd: KUBEBUILDER_ASSETS
// when set, else what hack/testenv.sh builds (instant once cached).
func Assets() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command("bash", filepath.Join(RepoRoot(), "hack", "testenv.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build kube-apiserver/etcd with hack/testenv.sh: %w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// NewScheme returns a scheme with client-go's types and netbridge's.
func NewScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := nbv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Start runs an API server for the test and stops it in t.Cleanup. It fails
// the test (never skips) when the server cannot start.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	env, err := StartEnv(opts)
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop kube-apiserver: %v", err)
		}
	})
	return env
}

// StartEnv is Start for callers without a testing.TB (the lab, benchmarks'
// TestMain). Call Stop when done.
func StartEnv(opts Options) (*Env, error) {
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	scheme := NewScheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        append([]string{filepath.Join(RepoRoot(), "deploy", "crds")}, opts.ExtraCRDPaths...),
		ErrorIfCRDPathMissing:    true,
		Scheme:                   scheme,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("envtest start (assets %s): %w", assets, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("client: %w", err)
	}
	e := &Env{Config: cfg, Client: c, Scheme: scheme, env: env}
	kc, err := e.writeKubeconfig()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	e.Kubeconfig = kc
	return e, nil
}

// Stop stops the API server and etcd and removes the kubeconfig.
func (e *Env) Stop() error {
	e.apiMu.Lock()
	if e.api != nil {
		e.api.release()
	}
	e.apiMu.Unlock()
	if e.Kubeconfig != "" {
		_ = os.RemoveAll(filepath.Dir(e.Kubeconfig))
	}
	return e.env.Stop()
}

// Environment exposes envtest's environment (e.g. to add users).
func (e *Env) Environment() *envtest.Environment { return e.env }

func (e *Env) writeKubeconfig() (string, error) {
	dir, err := os.MkdirTemp("", "netbridge-kubeconfig-")
	if err != nil {
		return "", fmt.Errorf("kubeconfig dir: %w", err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(e.Config, path); err != nil {
		return "", err
	}
	return path, nil
}

// WriteKubeconfig writes cfg (certificate or token credentials) as a
// kubeconfig file that client-go and netbridgectl read.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// WaitCRDsEstablished waits until the named CRDs report Established.
func WaitCRDsEstablished(ctx context.Context, c client.Client, names ...string) error {
	for _, name := range names {
		for {
			var crd apiextensionsv1.CustomResourceDefinition
			err := c.Get(ctx, client.ObjectKey{Name: name}, &crd)
			if err == nil && established(&crd) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("crd %s not established: %w (last error %v)", name, ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

// GVR of the netbridge resources, for dynamic clients.
var (
	BridgeConfigsGVR   = schema.GroupVersionResource{Group: "netbridge.io", Version: "v1alpha1", Resource: "bridgeconfigs"}
	BridgeEndpointsGVR = schema.GroupVersionResource{Group: "netbridge.io", Version: "v1alpha1", Resource: "bridgeendpoints"}
	BridgeGatewaysGVR  = schema.GroupVersionResource{Group: "netbridge.io", Version: "v1alpha1", Resource: "bridgegateways"}
)
