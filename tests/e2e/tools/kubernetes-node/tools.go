//go:build tools

// Package tools only exists so that `go mod tidy` keeps the commands that
// `tests/e2e/tools.sh node` builds in go.sum. It is never compiled (build tag "tools").
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
