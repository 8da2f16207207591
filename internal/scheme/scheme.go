// Package scheme builds the runtime.Scheme every netbridge binary uses:
// client-go's built-in types plus netbridge.io/v1alpha1.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// New returns a fresh scheme (never a shared global: callers may add to it).
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // static registration: cannot fail at run time
	}
	if err := nbv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}
