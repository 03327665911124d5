// Package talos checks meshspan against Talos's own code
// (github.com/siderolabs/talos/pkg/machinery), kept in a separate module so
// neither the provider nor the agent links machinery.
package talos
