// Package kubespanconfig checks the KubeSpanConfig form of
// meshspan_talos_patch against Talos machinery v1.13.0, the first release
// with that document. It is a module of its own because tests/talos pins
// machinery v1.11.5, where the legacy form is checked.
package kubespanconfig
