package testenv

import "path/filepath"

// MultusNADCRDPath is the test-only Multus NetworkAttachmentDefinition CRD
// (k8s.cni.cncf.io/v1), for Options.ExtraCRDPaths.
func MultusNADCRDPath() string {
	return filepath.Join(RepoRoot(), "internal", "testenv", "testdata", "multus-nad-crd.yaml")
}

// MultusNADCRDName is the CRD's name, for WaitCRDsEstablished.
const MultusNADCRDName = "network-attachment-definitions.k8s.cni.cncf.io"
