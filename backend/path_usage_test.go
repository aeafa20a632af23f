package backend

import (
	"encoding/json"
	"testing"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// An edge sends contract.UsageReport; parseReport must read every field it
// names, so a field added to the wire type without its parsing fails here.
func TestParseReportReadsTheWireType(t *testing.T) {
	in := contract.UsageReport{
		Tenant: "acme", KeyID: "9b2f3c1e-6a7d-4e8f-9a0b-1c2d3e4f5a6b", Requests: 7, Errors: 2,
		UpstreamLatencyMsSum: 12.5, UpstreamLatencyMsMax: 4.25, LastUsedAt: 1_700_000_000,
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var item map[string]interface{}
	if err := json.Unmarshal(b, &item); err != nil {
		t.Fatal(err)
	}
	r, err := parseReport(item)
	if err != nil {
		t.Fatal(err)
	}
	want := gatewayReport{tenant: in.Tenant, keyID: in.KeyID, requests: 7, errs: 2, latencySumMicro: 12500, max: 4250, lastUsedSec: 1_700_000_000}
	if r != want {
		t.Fatalf("parseReport = %+v, want %+v", r, want)
	}
	if n := len(item); n != 7 {
		t.Fatalf("the wire type has %d fields; this test and parseReport know 7", n)
	}
}
