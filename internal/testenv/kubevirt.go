package testenv

import "path/filepath"

// KubeVirtCRDPath is the test-only KubeVirt VirtualMachineInstance CRD
// (kubevirt.io/v1), for Options.ExtraCRDPaths: kubevirt.io/api is not
// served here and a bare API server knows no VMIs.
func KubeVirtCRDPath() string {
	return filepath.Join(RepoRoot(), "internal", "testenv", "testdata", "kubevirt-vmi-crd.yaml")
}

// KubeVirtVMICRDName is the CRD's name, for WaitCRDsEstablished.
const KubeVirtVMICRDName = "virtualmachineinstances.kubevirt.io"
