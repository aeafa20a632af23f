package portal

import (
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// probeTenant stands for "any tenant" in capability checks of
// tenants/<tenant> paths: the platform admin policy grants tenants/*.
const probeTenant = "any-tenant"

// adminTenantsNav is the platform admin's: listing tenants and creating
// one. Tenant admins and developers have neither (their policies name only
// their own tenant's paths), so they are never offered it and get a 403 by
// URL.
var adminTenantsNav = &navEntry{
	title: "Manage tenants", href: "/admin/tenants", order: 80,
	needs: []capCheck{
		{"{mount}/tenants/", "list"},
		{"{mount}/tenants/" + probeTenant, "create"},
		{"{mount}/tenants/" + probeTenant, "update"},
	},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{
			"GET /admin/tenants":                  (*Server).adminTenantsPage,
			"GET /admin/tenants/new":              (*Server).adminTenantNewPage,
			"POST /admin/tenants":                 (*Server).adminTenantCreate,
			"GET /admin/tenants/{tenant}":         (*Server).adminTenantPage,
			"GET /admin/tenants/{tenant}/suspend": (*Server).adminTenantSuspendConfirm,
			"POST /admin/tenants/{tenant}/status": (*Server).adminTenantStatus,
			"POST /admin/tenants/{tenant}/quota":  (*Server).adminTenantQuota,
			"POST /admin/tenants/{tenant}/limits": (*Server).adminTenantLimits,
		},
		nav: adminTenantsNav,
	})
}

// quotaPeriods are the plugin's quota_period values (contract.PeriodNames).
var quotaPeriods = []string{"hour", "day", "week", "month"}

type tenantRow struct {
	Name, DisplayName, Status, KeyPrefix string
	MaxKeys, Quota                       string
	ReadFailed                           bool
}

type adminTenantsData struct {
	Rows []tenantRow
	pager
	CanActAs     bool
	ActiveTenant string
}

// adminTenantsPage lists the tenants a page at a time. Vault's tenant list
// has no paging of its own; names are cheap, so the portal lists them all
// and reads the records of the shown page only.
func (s *Server) adminTenantsPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, adminTenantsNav) {
		return
	}
	after := r.URL.Query().Get("after")
	if after != "" && !nameRE.MatchString(after) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad page", "after must be a tenant name.")
		return
	}
	sec, err := rc.vault.Logical().ListWithContext(r.Context(), s.cfg.Mount+"/tenants/")
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	var names []string
	if sec != nil {
		names = stringList(sec.Data["keys"])
	}
	shown, pg := pageOf(names, after, s.cfg.PageSize, "/admin/tenants")
	d := adminTenantsData{Rows: make([]tenantRow, len(shown)), pager: pg, CanActAs: rc.sess.canListTenants, ActiveTenant: rc.tenant}
	each(len(shown), func(i int) { d.Rows[i] = rc.tenantRow(r, shown[i]) }, func(i int, err error) {
		rc.s.log.Error("tenant row", "tenant", shown[i], "error", err)
		d.Rows[i] = tenantRow{Name: shown[i], ReadFailed: true}
	})
	s.render(w, r, rc, "admin_tenants.html", "Manage tenants", http.StatusOK, d)
}

func (rc *reqCtx) tenantRow(r *http.Request, name string) tenantRow {
	row := tenantRow{Name: name, DisplayName: "–", Status: "–", KeyPrefix: "–", MaxKeys: "–", Quota: "–"}
	sec, err := rc.vault.Logical().ReadWithContext(r.Context(), rc.s.cfg.Mount+"/tenants/"+name)
	if err != nil || sec == nil {
		row.ReadFailed = true
		return row
	}
	row.DisplayName = orDash(str(sec.Data, "display_name"))
	row.Status = str(sec.Data, "status")
	row.KeyPrefix = orDash(str(sec.Data, "key_prefix"))
	row.MaxKeys = limitText(str(sec.Data, "max_keys"))
	row.Quota = quotaText(sec.Data)
	return row
}

// limitText shows a 0 limit as the "no limit" it means.
func limitText(v string) string {
	if v == "" || v == "0" {
		return "no limit"
	}
	return v
}

func quotaText(data map[string]interface{}) string {
	q := str(data, "quota")
	if q == "" || q == "0" {
		return "none"
	}
	return q + " per " + str(data, "quota_period")
}

// ttlText shows a TTL in seconds as a Go duration; 0 is "not set".
func ttlText(v string) string {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return "not set"
	}
	return (time.Duration(n) * time.Second).String()
}

// tenantForm is the create form's values, kept to show the form again
// with an error.
type tenantForm struct {
	Tenant, DisplayName, KeyPrefix, Environments string
	MaxKeys, DefaultTTL, MaxTTL                  string
	Quota, QuotaPeriod                           string
}

type tenantNewData struct {
	Form    tenantForm
	Error   string
	Periods []string
}

func (s *Server) adminTenantNewPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, adminTenantsNav) {
		return
	}
	s.render(w, r, rc, "admin_tenant_new.html", "New tenant", http.StatusOK, tenantNewData{Form: tenantForm{QuotaPeriod: "day"}, Periods: quotaPeriods})
}

// fieldErr is a form field the portal refuses before asking Vault.
type fieldErr struct{ msg string }

func (e fieldErr) Error() string { return e.msg }

// formInt is a non-negative whole number field, "" when empty.
func formInt(form url.Values, field string) (string, error) {
	v := strings.TrimSpace(form.Get(field))
	if v == "" {
		return "", nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return "", fieldErr{field + " must be a whole number, 0 or more"}
	}
	return strconv.FormatInt(n, 10), nil
}

// formTTL is a TTL field passed on to Vault, which parses it ("720h",
// "3600"); the portal only bounds what it forwards.
func formTTL(form url.Values, field string) (string, error) {
	v := strings.TrimSpace(form.Get(field))
	if len(v) > 32 || strings.ContainsAny(v, " \t\r\n") {
		return "", fieldErr{field + ` must be a duration such as "720h" or a number of seconds`}
	}
	return v, nil
}

// limitsData reads the fields the create and limits forms share into data
// (only those given) and f.
func limitsData(form url.Values, f *tenantForm, data map[string]interface{}) error {
	var err error
	f.DisplayName = strings.TrimSpace(form.Get("display_name"))
	if len(f.DisplayName) > 256 {
		return fieldErr{"display_name must be at most 256 characters"}
	}
	if f.DisplayName != "" {
		data["display_name"] = f.DisplayName
	}
	if f.MaxKeys, err = formInt(form, "max_keys"); err != nil {
		return err
	}
	if f.MaxKeys != "" {
		data["max_keys"] = f.MaxKeys
	}
	if f.DefaultTTL, err = formTTL(form, "default_ttl"); err != nil {
		return err
	}
	if f.DefaultTTL != "" {
		data["default_ttl"] = f.DefaultTTL
	}
	if f.MaxTTL, err = formTTL(form, "max_ttl"); err != nil {
		return err
	}
	if f.MaxTTL != "" {
		data["max_ttl"] = f.MaxTTL
	}
	return nil
}

// quotaData reads quota and quota_period into data and f.
func quotaData(form url.Values, f *tenantForm, data map[string]interface{}, required bool) error {
	var err error
	if f.Quota, err = formInt(form, "quota"); err != nil {
		return err
	}
	if f.Quota == "" && required {
		return fieldErr{"quota is required (0 means no quota)"}
	}
	f.QuotaPeriod = form.Get("quota_period")
	if f.QuotaPeriod != "" && !contains(quotaPeriods, f.QuotaPeriod) {
		return fieldErr{"quota_period must be one of " + strings.Join(quotaPeriods, ", ")}
	}
	if f.Quota != "" {
		data["quota"] = f.Quota
		if f.QuotaPeriod != "" {
			data["quota_period"] = f.QuotaPeriod
		}
	}
	return nil
}

func (s *Server) adminTenantCreate(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, adminTenantsNav) {
		return
	}
	form := r.PostForm
	f := tenantForm{
		Tenant:       strings.TrimSpace(form.Get("tenant")),
		KeyPrefix:    strings.TrimSpace(form.Get("key_prefix")),
		Environments: strings.TrimSpace(form.Get("allowed_environments")),
	}
	data := map[string]interface{}{}
	fail := func(status int, msg string) {
		s.render(w, r, rc, "admin_tenant_new.html", "New tenant", status, tenantNewData{Form: f, Error: msg, Periods: quotaPeriods})
	}
	if !nameRE.MatchString(f.Tenant) {
		_ = limitsData(form, &f, data)
		fail(http.StatusBadRequest, "tenant must be 1-63 lower-case letters, digits or dashes, starting and ending with a letter or digit")
		return
	}
	if err := limitsData(form, &f, data); err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	if err := quotaData(form, &f, data, false); err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	if len(f.KeyPrefix) > 16 {
		fail(http.StatusBadRequest, "key_prefix must be at most 16 characters")
		return
	}
	if f.KeyPrefix != "" {
		data["key_prefix"] = f.KeyPrefix
	}
	if len(f.Environments) > 256 {
		fail(http.StatusBadRequest, "allowed_environments must be at most 256 characters")
		return
	}
	if f.Environments != "" {
		data["allowed_environments"] = f.Environments
	}
	p := s.cfg.Mount + "/tenants/" + f.Tenant
	// A write to an existing tenant would update it: "create" must not
	// change a tenant that is there already.
	existing, err := rc.vault.Logical().ReadWithContext(r.Context(), p)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	if existing != nil {
		fail(http.StatusConflict, "tenant "+f.Tenant+" exists already: open it from the list to change it")
		return
	}
	if _, err := rc.vault.Logical().WriteWithContext(r.Context(), p, data); err != nil {
		if msg, ok := vaultBadRequest(err); ok {
			fail(http.StatusBadRequest, msg)
			return
		}
		s.vaultError(w, r, rc, err)
		return
	}
	s.log.Info("tenant created", "user", rc.sess.user, "tenant", f.Tenant)
	rc.sess.setFlash("Tenant " + f.Tenant + " created.")
	http.Redirect(w, r, "/admin/tenants/"+f.Tenant, http.StatusSeeOther)
}

// vaultBadRequest is Vault's message of a 400, which names the field.
func vaultBadRequest(err error) (string, bool) {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
		return strings.Join(re.Errors, "; "), true
	}
	return "", false
}

type adminTenantData struct {
	Name         string
	Tenant       map[string]interface{}
	Suspended    bool
	Environments string
	MaxKeys      string
	DefaultTTL   string
	MaxTTL       string
	Quota        string
	Metadata     []kv
	Times        map[string]string
	Usage        map[string]string
	Form         tenantForm
	Periods      []string
	Error        string
	CanActAs     bool
}

// pathTenant is the path's tenant name, or a 400 page.
func (s *Server) pathTenant(w http.ResponseWriter, r *http.Request, rc *reqCtx) (string, bool) {
	if !rc.require(w, r, adminTenantsNav) {
		return "", false
	}
	t := r.PathValue("tenant")
	if !nameRE.MatchString(t) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "tenant must be a tenant name (lower-case letters, digits, dashes).")
		return "", false
	}
	return t, true
}

func (s *Server) readTenant(w http.ResponseWriter, r *http.Request, rc *reqCtx, name string) (*api.Secret, bool) {
	sec, err := rc.vault.Logical().ReadWithContext(r.Context(), s.cfg.Mount+"/tenants/"+name)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return nil, false
	}
	if sec == nil {
		s.message(w, r, rc, http.StatusNotFound, "Not found", "There is no tenant "+name+".")
		return nil, false
	}
	return sec, true
}

func (s *Server) adminTenantPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.pathTenant(w, r, rc)
	if !ok {
		return
	}
	s.showTenant(w, r, rc, name, http.StatusOK, "")
}

// showTenant renders a tenant's page, with errMsg above its forms when a
// change was refused.
func (s *Server) showTenant(w http.ResponseWriter, r *http.Request, rc *reqCtx, name string, status int, errMsg string) {
	sec, ok := s.readTenant(w, r, rc, name)
	if !ok {
		return
	}
	t := sec.Data
	d := adminTenantData{
		Name: name, Tenant: t, Suspended: str(t, "status") == "suspended",
		Environments: strings.Join(stringList(t["allowed_environments"]), ", "),
		MaxKeys:      limitText(str(t, "max_keys")),
		DefaultTTL:   ttlText(str(t, "default_ttl")), MaxTTL: ttlText(str(t, "max_ttl")),
		Quota: quotaText(t), Times: map[string]string{}, Usage: map[string]string{},
		Periods: quotaPeriods, Error: errMsg, CanActAs: rc.sess.canListTenants,
		Form: tenantForm{
			DisplayName: str(t, "display_name"), QuotaPeriod: orDefault(str(t, "quota_period"), "day"),
			Quota: str(t, "quota"), MaxKeys: str(t, "max_keys"),
		},
	}
	for _, k := range []string{"created_at", "updated_at"} {
		d.Times[k] = fmtTime(str(t, k))
	}
	if md, ok := t["metadata"].(map[string]interface{}); ok {
		for k := range md {
			d.Metadata = append(d.Metadata, kv{k, str(md, k)})
		}
		sort.Slice(d.Metadata, func(i, j int) bool { return d.Metadata[i].K < d.Metadata[j].K })
	}
	// Usage is shown when Vault gives it; the page is about the record.
	if u, err := rc.vault.Logical().ReadWithContext(r.Context(), s.cfg.Mount+"/tenants/"+name+"/usage"); err == nil && u != nil {
		for _, k := range []string{"keys_active", "verify_count", "keys_issued", "keys_revoked", "anomalies"} {
			d.Usage[k] = orDash(str(u.Data, k))
		}
	}
	s.render(w, r, rc, "admin_tenant.html", "Tenant "+name, status, d)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func (s *Server) adminTenantSuspendConfirm(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.pathTenant(w, r, rc)
	if !ok {
		return
	}
	sec, ok := s.readTenant(w, r, rc, name)
	if !ok {
		return
	}
	s.render(w, r, rc, "admin_suspend.html", "Suspend tenant", http.StatusOK, adminTenantData{Name: name, Tenant: sec.Data})
}

func (s *Server) adminTenantStatus(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.pathTenant(w, r, rc)
	if !ok {
		return
	}
	status := r.PostForm.Get("status")
	if status != "active" && status != "suspended" {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", `status must be "active" or "suspended".`)
		return
	}
	// Vault's update of a missing tenant is a 400; the read says 404.
	if _, ok := s.readTenant(w, r, rc, name); !ok {
		return
	}
	if _, err := rc.vault.Logical().WriteWithContext(r.Context(), s.cfg.Mount+"/tenants/"+name, map[string]interface{}{"status": status}); err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	s.log.Info("tenant status set", "user", rc.sess.user, "tenant", name, "status", status)
	if status == "suspended" {
		rc.sess.setFlash("Tenant " + name + " suspended: its keys verify as TENANT_SUSPENDED and none can be issued until you resume it.")
	} else {
		rc.sess.setFlash("Tenant " + name + " resumed.")
	}
	http.Redirect(w, r, "/admin/tenants/"+name, http.StatusSeeOther)
}

func (s *Server) adminTenantQuota(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.pathTenant(w, r, rc)
	if !ok {
		return
	}
	var f tenantForm
	data := map[string]interface{}{}
	if err := quotaData(r.PostForm, &f, data, true); err != nil {
		s.showTenant(w, r, rc, name, http.StatusBadRequest, err.Error())
		return
	}
	msg := "Quota of " + name + " removed."
	if f.Quota != "0" {
		msg = "Quota of " + name + " set to " + f.Quota + " per " + orDefault(f.QuotaPeriod, "day") + "."
	}
	s.updateTenant(w, r, rc, name, data, msg)
}

func (s *Server) adminTenantLimits(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	name, ok := s.pathTenant(w, r, rc)
	if !ok {
		return
	}
	var f tenantForm
	data := map[string]interface{}{}
	if err := limitsData(r.PostForm, &f, data); err != nil {
		s.showTenant(w, r, rc, name, http.StatusBadRequest, err.Error())
		return
	}
	if len(data) == 0 {
		s.showTenant(w, r, rc, name, http.StatusBadRequest, "nothing to change: fill in display_name, max_keys, default_ttl or max_ttl")
		return
	}
	s.updateTenant(w, r, rc, name, data, "Limits of "+name+" saved.")
}

// updateTenant writes a partial update of an existing tenant; Vault's 400
// (a bad TTL, default_ttl over max_ttl) is shown on the tenant's page.
func (s *Server) updateTenant(w http.ResponseWriter, r *http.Request, rc *reqCtx, name string, data map[string]interface{}, flash string) {
	if _, ok := s.readTenant(w, r, rc, name); !ok {
		return
	}
	if _, err := rc.vault.Logical().WriteWithContext(r.Context(), s.cfg.Mount+"/tenants/"+name, data); err != nil {
		if msg, ok := vaultBadRequest(err); ok {
			s.showTenant(w, r, rc, name, http.StatusBadRequest, msg)
			return
		}
		s.vaultError(w, r, rc, err)
		return
	}
	s.log.Info("tenant updated", "user", rc.sess.user, "tenant", name)
	rc.sess.setFlash(flash)
	http.Redirect(w, r, "/admin/tenants/"+name, http.StatusSeeOther)
}
