package backend

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// identityView answers the identity questions of the system view from maps,
// the way Vault's dynamic system view does from its identity store.
type identityView struct {
	*logical.StaticSystemView
	entities map[string]*logical.Entity
	groups   map[string][]*logical.Group
}

func (v identityView) EntityInfo(id string) (*logical.Entity, error) {
	if id == "" {
		return nil, nil
	}
	return v.entities[id], nil
}

func (v identityView) GroupsForEntity(id string) ([]*logical.Group, error) {
	return v.groups[id], nil
}

// Entities of the guard tests, by id.
var guardEntities = map[string]*logical.Entity{
	"acme-entity": {ID: "acme-entity", Metadata: map[string]string{"tenant": "acme"}},
	"acme-jwt":    {ID: "acme-jwt", Aliases: []*logical.Alias{{MountAccessor: "auth_jwt_1", Metadata: map[string]string{"tenant": "acme", "role": "tenant-admin"}}}},
	"acme-custom": {ID: "acme-custom", Aliases: []*logical.Alias{{MountAccessor: "auth_userpass_1", CustomMetadata: map[string]string{"tenant": "acme"}}}},
	// An OIDC sign-in (bootstrap/auth-oidc.sh): the oidc mount's alias
	// carries the tenant claim, beside an older alias of another mount.
	"acme-oidc": {ID: "acme-oidc", Aliases: []*logical.Alias{
		{MountAccessor: "auth_userpass_1", Metadata: map[string]string{}},
		{MountAccessor: "auth_oidc_1", Metadata: map[string]string{"tenant": "acme", "email": "ada@acme.example", "role": "portal"}},
	}},
	"oidc-plus":    {ID: "oidc-plus", Aliases: []*logical.Alias{{MountAccessor: "auth_oidc_1", Metadata: map[string]string{"tenant": "+", "role": "portal"}}}},
	"oidc-admin":   {ID: "oidc-admin", Aliases: []*logical.Alias{{MountAccessor: "auth_oidc_1", Metadata: map[string]string{"role": "portal"}}}},
	"plus-claim":   {ID: "plus-claim", Aliases: []*logical.Alias{{MountAccessor: "auth_jwt_1", Metadata: map[string]string{"tenant": "+"}}}},
	"star-claim":   {ID: "star-claim", Metadata: map[string]string{"tenant": "*"}},
	"no-tenant":    {ID: "no-tenant", Metadata: map[string]string{"team": "acme"}},
	"disabled":     {ID: "disabled", Disabled: true, Metadata: map[string]string{"tenant": "acme"}},
	"admin":        {ID: "admin"},
	"other-groups": {ID: "other-groups"},
}

var guardGroups = map[string][]*logical.Group{
	"admin":        {{ID: "g1", Name: "apikeys-platform-admins"}},
	"other-groups": {{ID: "g2", Name: "acme-developers"}},
	// Vault's GroupsForEntity lists inherited groups too: the OIDC tier
	// group is a member of the platform admins' group.
	"oidc-admin": {{ID: "g3", Name: "apikeys-platform-admin-via-oidc"}, {ID: "g1", Name: "apikeys-platform-admins"}},
}

// newGuardBackend is a backend whose system view knows guardEntities, with
// tenants acme and globex and a role web in each.
func newGuardBackend(t *testing.T) (*backend, *countingStorage) {
	t.Helper()
	b, s := newGuardBackendOn(t, &countingStorage{Storage: &logical.InmemStorage{}})
	for _, tenant := range []string{"acme", "globex"} {
		b.do(t, s, logical.CreateOperation, "tenants/"+tenant, map[string]interface{}{})
		b.do(t, s, logical.CreateOperation, "tenants/"+tenant+"/roles/web", map[string]interface{}{"scopes": "read"})
	}
	return b, s
}

// as sends a request on behalf of an entity ("" for none) and returns the
// response and error as the plugin produced them.
func (b *backend) as(s logical.Storage, entityID string, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	return b.HandleRequest(context.Background(), &logical.Request{
		Operation: op, Path: path, Data: data, Storage: s, EntityID: entityID,
	})
}

func TestGuardCoversEveryTenantPath(t *testing.T) {
	b, _ := newTestBackend(t)
	guarded := 0
	for _, p := range b.Paths {
		if strings.HasPrefix(p.Pattern, "tenants/") && p.Pattern != "tenants/?$" && !capturesTenant(p.Pattern) {
			t.Errorf("path %q is under tenants/ but takes no tenant capture: the guard cannot check it", p.Pattern)
		}
		for op, h := range p.Operations {
			_, isGuarded := h.(*guardedOperation)
			if capturesTenant(p.Pattern) && !isGuarded {
				t.Errorf("%s %q is not guarded", op, p.Pattern)
			}
			if !capturesTenant(p.Pattern) && isGuarded {
				t.Errorf("%s %q takes no tenant but is guarded", op, p.Pattern)
			}
			if isGuarded {
				guarded++
			}
		}
		//lint:ignore SA1019 the test is that no tenant path uses the deprecated map
		if len(p.Callbacks) > 0 && capturesTenant(p.Pattern) {
			t.Errorf("%q uses the deprecated Callbacks map", p.Pattern)
		}
	}
	// tenant record (4), roles (1+4), creds (2), keys (1+2), tenant verify
	// (1) at least: a guard that matched nothing would pass the loop above.
	if guarded < 15 {
		t.Fatalf("only %d tenant operations guarded", guarded)
	}
}

func TestGuardKeepsOperationProperties(t *testing.T) {
	b, _ := newTestBackend(t)
	for _, p := range b.Paths {
		if p.Pattern != "tenants/"+namePattern("tenant")+"$" {
			continue
		}
		h := p.Operations[logical.DeleteOperation]
		if _, ok := h.(*guardedOperation); !ok {
			t.Fatal("tenant delete is not guarded")
		}
		if props := h.Properties(); !props.ForwardPerformanceStandby || props.Summary == "" {
			t.Fatalf("guarded operation lost its properties: %+v", props)
		}
		return
	}
	t.Fatal("tenant path not found")
}

func TestGuardOffLetsEveryCallerThrough(t *testing.T) {
	b, s := newGuardBackend(t)
	for _, entity := range []string{"", "plus-claim", "acme-entity"} {
		if _, err := b.as(s, entity, logical.ReadOperation, "tenants/globex", nil); err != nil {
			t.Fatalf("entity %q with enforcement off: %v", entity, err)
		}
	}
}

func TestGuardDecisions(t *testing.T) {
	b, s := newGuardBackend(t)
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{
		"enforce_entity_tenant": true, "platform_admin_groups": "apikeys-platform-admins",
	})
	for _, tc := range []struct {
		name, entity string
		acme, globex bool
	}{
		{"entity metadata", "acme-entity", true, false},
		{"JWT alias metadata", "acme-jwt", true, false},
		{"alias custom metadata", "acme-custom", true, false},
		{"OIDC alias metadata", "acme-oidc", true, false},
		{"policy glob as OIDC tenant claim", "oidc-plus", false, false},
		{"OIDC platform admin through the nested group", "oidc-admin", true, true},
		{"policy glob as tenant claim", "plus-claim", false, false},
		{"star as tenant", "star-claim", false, false},
		{"entity without tenant", "no-tenant", false, false},
		{"no entity (root, token store)", "", false, false},
		{"entity unknown to Vault", "ghost", false, false},
		{"disabled entity", "disabled", false, false},
		{"platform admin group", "admin", true, true},
		{"other groups", "other-groups", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for tenant, want := range map[string]bool{"acme": tc.acme, "globex": tc.globex} {
				// One path of each shape: record, list, leaf, write.
				for _, r := range []struct {
					op   logical.Operation
					path string
					data map[string]interface{}
				}{
					{logical.ReadOperation, "tenants/" + tenant, nil},
					{logical.ListOperation, "tenants/" + tenant + "/keys/", nil},
					{logical.ReadOperation, "tenants/" + tenant + "/roles/web", nil},
					{logical.UpdateOperation, "tenants/" + tenant + "/verify", map[string]interface{}{"api_key": "x"}},
				} {
					resp, err := b.as(s, tc.entity, r.op, r.path, r.data)
					if want && (err != nil || resp == nil || resp.IsError()) {
						t.Errorf("%s %s: want allowed, got %v %v", r.op, r.path, resp, err)
					}
					if !want && !errors.Is(err, logical.ErrPermissionDenied) {
						t.Errorf("%s %s: want permission denied, got %v %v", r.op, r.path, resp, err)
					}
				}
			}
		})
	}
	// Paths that name no tenant stay with the policies alone.
	for _, r := range []struct {
		op   logical.Operation
		path string
		data map[string]interface{}
	}{
		{logical.ReadOperation, "config", nil},
		{logical.ListOperation, "tenants/", nil},
		{logical.UpdateOperation, "verify", map[string]interface{}{"api_key": "x"}},
	} {
		if _, err := b.as(s, "", r.op, r.path, r.data); err != nil {
			t.Errorf("%s %s with no entity: %v", r.op, r.path, err)
		}
	}
}

// The URL names the tenant the handler acts on; a body field of the same
// name must not talk the guard into another tenant.
func TestGuardUsesTheTenantOfTheURL(t *testing.T) {
	b, s := newGuardBackend(t)
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"enforce_entity_tenant": true, "platform_admin_groups": "apikeys-platform-admins"})
	_, err := b.as(s, "acme-entity", logical.UpdateOperation, "tenants/globex/roles/web", map[string]interface{}{"tenant": "acme", "scopes": "admin"})
	if !errors.Is(err, logical.ErrPermissionDenied) {
		t.Fatalf("body tenant=acme on globex's path: %v", err)
	}
	r, err := b.as(s, "admin", logical.ReadOperation, "tenants/globex/roles/web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Data["scopes"], []string{"read"}) {
		t.Fatalf("globex's role changed: %v", r.Data["scopes"])
	}
}

func TestGuardReadsConfigFromMemoryAndFollowsInvalidate(t *testing.T) {
	b, s := newGuardBackend(t)
	ctx := context.Background()
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"enforce_entity_tenant": true})

	// A local write takes effect at once, and guarded requests read no
	// config from storage (keys list itself only lists).
	s.reset()
	for i := 0; i < 5; i++ {
		if _, err := b.as(s, "acme-entity", logical.ListOperation, "tenants/acme/keys/", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.as(s, "acme-entity", logical.ListOperation, "tenants/globex/keys/", nil); !errors.Is(err, logical.ErrPermissionDenied) {
			t.Fatalf("globex with enforcement on: %v", err)
		}
	}
	if s.gets != 0 {
		t.Fatalf("guarded requests read storage %d times", s.gets)
	}

	// Another node turns enforcement off: this node keeps its copy until
	// Vault invalidates exactly the config entry.
	putConfig(t, s, &mountConfig{KeyPrefix: "ak"})
	b.Invalidate(ctx, "tenants/globex")
	b.Invalidate(ctx, "config/")
	if _, err := b.as(s, "acme-entity", logical.ListOperation, "tenants/globex/keys/", nil); !errors.Is(err, logical.ErrPermissionDenied) {
		t.Fatalf("cache dropped by an unrelated key: %v", err)
	}
	b.Invalidate(ctx, configPath)
	if _, err := b.as(s, "acme-entity", logical.ListOperation, "tenants/globex/keys/", nil); err != nil {
		t.Fatalf("after Invalidate(config) the new setting must hold: %v", err)
	}

	// And back on, the same way.
	putConfig(t, s, &mountConfig{KeyPrefix: "ak", EnforceEntityTenant: true})
	b.Invalidate(ctx, configPath)
	if _, err := b.as(s, "acme-entity", logical.ListOperation, "tenants/globex/keys/", nil); !errors.Is(err, logical.ErrPermissionDenied) {
		t.Fatalf("enforcement written by another node not applied: %v", err)
	}

	// A standby that never served a request fills from storage once.
	b2, _ := newGuardBackendOn(t, s)
	if _, err := b2.as(s, "acme-entity", logical.ListOperation, "tenants/globex/keys/", nil); !errors.Is(err, logical.ErrPermissionDenied) {
		t.Fatalf("cold backend: %v", err)
	}
}

func newGuardBackendOn(t *testing.T, s *countingStorage) (*backend, *countingStorage) {
	t.Helper()
	conf := logical.TestBackendConfig()
	conf.System = identityView{StaticSystemView: logical.TestSystemView(), entities: guardEntities, groups: guardGroups}
	conf.StorageView = s
	lb, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	return lb.(*backend), s
}

func putConfig(t *testing.T, s logical.Storage, cfg *mountConfig) {
	t.Helper()
	entry, err := logical.StorageEntryJSON(configPath, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), entry); err != nil {
		t.Fatal(err)
	}
}

func TestGuardConfigFields(t *testing.T) {
	b, s := newGuardBackend(t)
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{
		"enforce_entity_tenant": "true", "platform_admin_groups": "ops, apikeys-platform-admins,ops",
	})
	r := b.do(t, s, logical.ReadOperation, "config", nil)
	if r.Data["enforce_entity_tenant"] != true || !reflect.DeepEqual(r.Data["platform_admin_groups"], []string{"apikeys-platform-admins", "ops"}) {
		t.Fatalf("config: %v", r.Data)
	}
	// A partial update keeps the guard settings.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"key_prefix": "zz"})
	r = b.do(t, s, logical.ReadOperation, "config", nil)
	if r.Data["enforce_entity_tenant"] != true || len(r.Data["platform_admin_groups"].([]string)) != 2 {
		t.Fatalf("partial update lost guard settings: %v", r.Data)
	}
	// An empty list clears it.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"platform_admin_groups": ""})
	if _, err := b.as(s, "admin", logical.ReadOperation, "tenants/globex", nil); !errors.Is(err, logical.ErrPermissionDenied) {
		t.Fatalf("admin group still passes after the list was cleared: %v", err)
	}

	resp, err := b.as(s, "", logical.UpdateOperation, "config", map[string]interface{}{"enforce_entity_tenant": "maybe"})
	if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "enforce_entity_tenant") {
		t.Fatalf("bad bool: %v %v", resp, err)
	}
	if code, _ := logical.RespondErrorCommon(&logical.Request{}, resp, err); code != http.StatusBadRequest {
		t.Fatalf("bad bool: HTTP %d", code)
	}
	// The failed write changed nothing.
	if _, err := b.as(s, "acme-entity", logical.ReadOperation, "tenants/globex", nil); !errors.Is(err, logical.ErrPermissionDenied) {
		t.Fatalf("failed config write changed the guard: %v", err)
	}
}

var _ framework.OperationHandler = (*guardedOperation)(nil)
