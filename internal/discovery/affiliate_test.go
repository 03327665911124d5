package discovery

import (
	"fmt"
	"testing"

	clientpb "github.com/siderolabs/discovery-api/api/v1alpha1/client/pb"
	dclient "github.com/siderolabs/discovery-client/pkg/client"
)

// FuzzAffiliateData: any decrypted affiliate plaintext (and endpoint list)
// decodes without panicking, and what we decode re-encodes to the same view.
func FuzzAffiliateData(f *testing.F) {
	seed, _ := toProto(testAffiliate("node", 7)).MarshalVT()
	ep, _ := (&clientpb.Endpoint{Ip: []byte{192, 0, 2, 1}, Port: 51820}).MarshalVT()
	f.Add(seed, ep)
	f.Add([]byte{0x12, 0x03, 1, 2, 3}, []byte{0x0a, 0x01, 0xff})
	f.Fuzz(func(t *testing.T, data, endpoint []byte) {
		var p clientpb.Affiliate
		if p.UnmarshalVT(data) != nil {
			return
		}
		da := &dclient.Affiliate{Affiliate: &p}
		var e clientpb.Endpoint
		if e.UnmarshalVT(endpoint) == nil {
			da.Endpoints = append(da.Endpoints, &e)
		}
		a, ok := affiliateFromProto(da)
		if !ok {
			return
		}
		again, ok := affiliateFromProto(&dclient.Affiliate{Affiliate: toProto(a), Endpoints: endpointsProto(a.Endpoints)})
		if !ok {
			t.Fatalf("re-encoded affiliate %+v lost its ID", a)
		}
		if a.PublicKey == "" {
			// Without KubeSpan data the mesh fields are not sent.
			a.Address, a.Networks, a.ExcludeNetworks = again.Address, again.Networks, again.ExcludeNetworks
		}
		if fmt.Sprint(a) != fmt.Sprint(again) {
			t.Fatalf("round trip\n got %+v\nwant %+v", again, a)
		}
	})
}
