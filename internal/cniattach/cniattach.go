// Package cniattach attaches a "pod" network namespace the way Multus does
// for a KubeVirt VM's secondary network: libcni runs the CNI plugin named by
// a NetworkAttachmentDefinition's config (CNI_COMMAND=ADD/DEL) with the
// pod's namespace, the K8S_* args and the preserved MAC as the "mac"
// capability argument. The plugin runs in the node's network namespace, as
// Multus runs on the node. The controller's CNI test and the lab (make lab)
// share it.
package cniattach

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	cni100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NADKind is the Multus NetworkAttachmentDefinition kind (read as
// unstructured: its Go types are not a dependency).
var NADKind = schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"}

// BuildPlugins builds (once, cached in .cache/cni/<version>) the pinned
// reference CNI plugins with hack/cni.sh and returns their folder.
func BuildPlugins(ctx context.Context, repoRoot string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "hack", "cni.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build the CNI plugins with hack/cni.sh: %w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// NADConfig reads a NetworkAttachmentDefinition's spec.config, the CNI
// configuration Multus hands the plugin.
func NADConfig(ctx context.Context, c client.Reader, namespace, name string) (string, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(NADKind)
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
		return "", fmt.Errorf("get networkattachmentdefinition %s/%s: %w", namespace, name, err)
	}
	conf, _, _ := unstructured.NestedString(u.Object, "spec", "config")
	if conf == "" {
		return "", fmt.Errorf("networkattachmentdefinition %s/%s has no spec.config", namespace, name)
	}
	return conf, nil
}

// Pod is what Multus knows of the pod (virt-launcher) it attaches.
type Pod struct {
	Namespace, Name, UID string
	// ContainerID is the sandbox's id (CNI_CONTAINERID).
	ContainerID string
	// NetNS is the pod's network namespace path (CNI_NETNS).
	NetNS string
	// IfName is the interface made in the pod (Multus: net1, net2, ...).
	IfName string
	// MAC is the network selection's "mac": KubeVirt's preserved MAC.
	MAC string
}

// Plugin is where the plugins are and where they run.
type Plugin struct {
	BinDir string
	// CacheDir is libcni's result cache (DEL reads it).
	CacheDir string
	// NodeNetNS is the name of the network namespace (ip netns) that plays
	// the node; empty runs the plugin in the caller's.
	NodeNetNS string
}

// Attachment is one ADD, to be undone by Del.
type Attachment struct {
	cni  *libcni.CNIConfig
	conf *libcni.PluginConfig
	rt   *libcni.RuntimeConf
}

// Add runs CNI ADD of the NAD config confJSON for pod, as Multus does.
func (p Plugin) Add(ctx context.Context, confJSON string, pod Pod) (*Attachment, *cni100.Result, error) {
	conf, err := libcni.NetworkPluginConfFromBytes([]byte(confJSON))
	if err != nil {
		return nil, nil, fmt.Errorf("NAD config is not a CNI config: %w", err)
	}
	var ex invoke.Exec
	if p.NodeNetNS != "" {
		ex = &nodeExec{ns: p.NodeNetNS}
	}
	a := &Attachment{
		cni:  libcni.NewCNIConfigWithCacheDir([]string{p.BinDir}, p.CacheDir, ex),
		conf: conf,
		rt: &libcni.RuntimeConf{
			ContainerID: pod.ContainerID,
			NetNS:       pod.NetNS,
			IfName:      pod.IfName,
			Args: [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", pod.Namespace},
				{"K8S_POD_NAME", pod.Name}, {"K8S_POD_INFRA_CONTAINER_ID", pod.ContainerID}, {"K8S_POD_UID", pod.UID}},
		},
	}
	if pod.MAC != "" {
		a.rt.CapabilityArgs = map[string]any{"mac": pod.MAC}
	}
	r, err := a.cni.AddNetwork(ctx, conf, a.rt)
	if err != nil {
		return nil, nil, fmt.Errorf("CNI ADD %s for %s/%s: %w", conf.Network.Type, pod.Namespace, pod.Name, err)
	}
	res, err := cni100.NewResultFromResult(r)
	if err != nil {
		return nil, nil, fmt.Errorf("CNI ADD result: %w", err)
	}
	return a, res, nil
}

// Del runs CNI DEL, as Multus does when the pod goes.
func (a *Attachment) Del(ctx context.Context) error {
	if err := a.cni.DelNetwork(ctx, a.conf, a.rt); err != nil {
		return fmt.Errorf("CNI DEL %s: %w", a.conf.Network.Type, err)
	}
	return nil
}

// nodeExec runs plugins inside a named network namespace (ip netns exec),
// so that no Go thread of the caller has to switch namespaces.
type nodeExec struct {
	ns string
	version.PluginDecoder
}

func (e *nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	if err := c.Run(); err != nil {
		// A plugin reports its error as a CNI error object on stdout.
		var cerr cnitypes.Error
		if json.Unmarshal(stdout.Bytes(), &cerr) == nil && cerr.Msg != "" {
			return nil, &cerr
		}
		return nil, fmt.Errorf("%s in netns %s: %w: %s%s", filepath.Base(pluginPath), e.ns, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func (e *nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}
