package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/cniattach"
	"github.com/netbridge-io/netbridge/internal/labnet"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

// NADName is the NetworkAttachmentDefinition the controller creates for the
// lab's segment (in every namespace: the segment selects none).
var NADName = nbv1.NetworkAttachmentName(nbv1.SegmentKey{BridgeConfig: ConfigName, Segment: SegmentName}, nil)

// VMInterface is the VM's link made by the CNI plugin (the guest's NIC in
// the lab: the namespace plays the guest, so it keeps the lab's name).
const VMInterface = "eth0"

// AttachVMsThroughNAD attaches every lab VM as Multus would for its
// virt-launcher pod: CNI ADD of the real bridge plugin (hack/cni.sh) run
// in the VM's node, with the config of the NAD the running controller
// created and the VM's preserved MAC as the "mac" capability argument;
// then the guest's static address. It waits up to timeout for the NAD and
// for each node agent's segment bridge (the plugin would otherwise create
// a bridge of its own).
func (e *Env) AttachVMsThroughNAD(ctx context.Context, timeout time.Duration) error {
	t0 := time.Now()
	binDir, err := cniattach.BuildPlugins(ctx, testenv.RepoRoot())
	if err != nil {
		return err
	}
	var conf string
	if werr := WaitFor(timeout, 100*time.Millisecond, func() bool {
		conf, err = cniattach.NADConfig(ctx, e.Client, VMNamespace, NADName)
		return err == nil
	}); werr != nil {
		return fmt.Errorf("the controller created no NAD %s/%s: %w (see %s)", VMNamespace, NADName, err, e.LogPath("controller"))
	}
	for _, v := range labnet.VMs {
		if err := WaitFor(time.Until(t0.Add(timeout)), 100*time.Millisecond, func() bool {
			_, err := e.Lab.Exec(v.Node, "ip", "link", "show", Bridge)
			return err == nil
		}); err != nil {
			return fmt.Errorf("node agent on %s did not create %s: %w (see %s)", v.Node, Bridge, err, e.LogPath(v.Node))
		}
		plugin := cniattach.Plugin{BinDir: binDir, CacheDir: filepath.Join(e.StateDir, "cni-cache"), NodeNetNS: e.Lab.NS(v.Node)}
		if _, _, err := plugin.Add(ctx, conf, cniattach.Pod{
			Namespace: VMNamespace, Name: "virt-launcher-" + v.Name, UID: e.Lab.Prefix + "-" + v.Name,
			ContainerID: e.Lab.Prefix + "-" + v.Name, NetNS: "/run/netns/" + e.Lab.NS(v.Name), IfName: VMInterface, MAC: v.MAC,
		}); err != nil {
			return fmt.Errorf("attach %s on %s: %w", v.Name, v.Node, err)
		}
		if err := e.Lab.ConfigureVM(v, VMInterface); err != nil {
			return fmt.Errorf("address of %s: %w", v.Name, err)
		}
	}
	e.logf("lab %s: %d VMs attached through NAD %s/%s and the bridge CNI plugin in %s", e.Lab.Prefix, len(labnet.VMs), VMNamespace, NADName,
		time.Since(t0).Round(time.Millisecond))
	return nil
}
