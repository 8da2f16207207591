package testenv

import "path/filepath"

// ForkliftCRDPath is the test-only Forklift Plan, NetworkMap and Migration
// CRDs (forklift.konveyor.io/v1beta1), for Options.ExtraCRDPaths.
func ForkliftCRDPath() string {
	return filepath.Join(RepoRoot(), "internal", "testenv", "testdata", "forklift-crds.yaml")
}

// ForkliftCRDNames are those CRDs' names, for WaitCRDsEstablished.
func ForkliftCRDNames() []string {
	return []string{"plans.forklift.konveyor.io", "networkmaps.forklift.konveyor.io", "migrations.forklift.konveyor.io"}
}
