//go:build tools

// kube-router's network-policy controller, run as a host process by make k8s-real-check:
// it enforces NetworkPolicy with iptables and ipset, which this kernel has (kindnet's
// engine needs nftables' queue, which it lacks).
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
