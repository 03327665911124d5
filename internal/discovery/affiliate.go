// Package discovery is meshspan's side of the KubeSpan discovery protocol: the
// self-hostable server (memory+snapshot and Redis stores) and the client the
// agent uses to publish its sealed affiliate and watch its peers'.
package discovery

import "github.com/meshspan/terraform-provider-meshspan/internal/member"

// Affiliate is one cluster member as its (decrypted) discovery data
// describes it (member.Affiliate).
type Affiliate = member.Affiliate
